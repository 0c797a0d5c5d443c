//! `kca_cluster`: a cluster and its five CAs.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tf_provider::schema::{AttributeType, Block, Description, NestedBlock, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource, map};

use crate::client::{ApiError, Authority, Client, Cluster, Policy};
use crate::diag;
use crate::provider::Shared;
use crate::schema::{
    Str, Strings, computed, known_strings, optional, optional_computed, required, string_list, string_map,
    strings, unknown_if_null,
};

pub struct ClusterResource(pub Shared);

type Labels = Value<BTreeMap<String, Value<String>>>;

#[derive(Clone, Default, Serialize, Deserialize)]
pub struct State {
    id: Str,
    name: Str,
    server: Str,
    key_algorithm: Str,
    labels: Labels,
    policy: Value<PolicyBlock>,
    ca_pem: Value<BTreeMap<String, String>>,
    ca_fingerprints: Value<BTreeMap<String, String>>,
}

/// Every field optional and computed: what the configuration leaves out is the server's value
/// (its default, or an out-of-band change), and so never a diff.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyBlock {
    default_ttl_seconds: Value<i64>,
    min_ttl_seconds: Value<i64>,
    max_ttl_seconds: Value<i64>,
    max_groups: Value<i64>,
    allowed_groups: Strings,
    allow_system_masters: Value<bool>,
    allowed_profiles: Strings,
}

impl PolicyBlock {
    fn from_api(policy: &Policy) -> Self {
        Self {
            default_ttl_seconds: Value::Value(policy.default_ttl_seconds),
            min_ttl_seconds: Value::Value(policy.min_ttl_seconds),
            max_ttl_seconds: Value::Value(policy.max_ttl_seconds),
            max_groups: Value::Value(policy.max_groups),
            allowed_groups: strings(&policy.allowed_groups),
            allow_system_masters: Value::Value(policy.allow_system_masters),
            allowed_profiles: strings(&policy.allowed_profiles),
        }
    }

    fn unknown_where_null(&mut self) {
        unknown_if_null(&mut self.default_ttl_seconds);
        unknown_if_null(&mut self.min_ttl_seconds);
        unknown_if_null(&mut self.max_ttl_seconds);
        unknown_if_null(&mut self.max_groups);
        unknown_if_null(&mut self.allowed_groups);
        unknown_if_null(&mut self.allow_system_masters);
        unknown_if_null(&mut self.allowed_profiles);
    }

    /// The configured fields as a (partial) policy object: kca fills in the others.
    fn to_json(&self) -> serde_json::Value {
        let mut object = serde_json::Map::new();
        let numbers = [
            ("default_ttl_seconds", &self.default_ttl_seconds),
            ("min_ttl_seconds", &self.min_ttl_seconds),
            ("max_ttl_seconds", &self.max_ttl_seconds),
            ("max_groups", &self.max_groups),
        ];
        for (name, value) in numbers {
            if let Value::Value(n) = value {
                object.insert(name.into(), json!(n));
            }
        }
        if self.allowed_groups.is_value()
            && let Some(groups) = known_strings(&self.allowed_groups)
        {
            object.insert("allowed_groups".into(), json!(groups));
        }
        if self.allowed_profiles.is_value()
            && let Some(profiles) = known_strings(&self.allowed_profiles)
        {
            object.insert("allowed_profiles".into(), json!(profiles));
        }
        if let Value::Value(allow) = self.allow_system_masters {
            object.insert("allow_system_masters".into(), json!(allow));
        }
        serde_json::Value::Object(object)
    }
}

fn known_labels(labels: &Labels) -> BTreeMap<String, String> {
    labels
        .as_ref_option()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_ref_option()?.clone()))).collect())
        .unwrap_or_default()
}

impl State {
    /// The state as kca has it. `null_labels`: the configuration has no `labels`, so kca's empty
    /// map is shown as null rather than as a change from null to `{}`.
    async fn fetch(client: &Client, id_or_name: &str, null_labels: bool) -> Result<Self, ApiError> {
        let cluster = client.get_cluster(id_or_name).await?;
        Self::with_authorities(client, cluster, null_labels).await
    }

    async fn with_authorities(
        client: &Client,
        cluster: Cluster,
        null_labels: bool,
    ) -> Result<Self, ApiError> {
        let authorities = client.list_authorities(&cluster.id).await?;
        Ok(Self::from_api(cluster, &authorities, null_labels))
    }

    fn from_api(cluster: Cluster, authorities: &[Authority], null_labels: bool) -> Self {
        let labels = if null_labels && cluster.labels.is_empty() {
            Value::Null
        } else {
            Value::Value(cluster.labels.into_iter().map(|(k, v)| (k, Value::Value(v))).collect())
        };
        Self {
            id: Value::Value(cluster.id),
            name: Value::Value(cluster.name),
            server: Value::Value(cluster.server),
            key_algorithm: Value::Value(cluster.key_algorithm),
            labels,
            policy: Value::Value(PolicyBlock::from_api(&cluster.policy)),
            ca_pem: Value::Value(authorities.iter().map(|a| (a.kind.clone(), a.bundle_pem())).collect()),
            ca_fingerprints: Value::Value(
                authorities.iter().map(|a| (a.kind.clone(), a.fingerprint_sha256.clone())).collect(),
            ),
        }
    }

    fn unknown_computed(&mut self) {
        self.id = Value::Unknown;
        self.ca_pem = Value::Unknown;
        self.ca_fingerprints = Value::Unknown;
        unknown_if_null(&mut self.key_algorithm);
        match &mut self.policy {
            Value::Value(policy) => policy.unknown_where_null(),
            other => *other = Value::Unknown,
        }
    }

    fn id(&self, diags: &mut Diagnostics) -> Option<String> {
        let id = self.id.as_ref_option().cloned();
        if id.is_none() {
            diag::error(diags, "kca_cluster has no id in its state", "");
        }
        id
    }
}

#[async_trait]
impl Resource for ClusterResource {
    type State<'a> = State;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        let number = || AttributeType::Number;
        Some(Schema {
            version: 1,
            block: Block {
                description: Description::markdown(
                    "A Kubernetes cluster in kca, with its five CAs. Import with the cluster's id or name.",
                ),
                attributes: map! {
                    "id" => computed(AttributeType::String, "The cluster's UUID."),
                    "name" => required(AttributeType::String,
                        "DNS label, unique in kca. Changing it replaces the cluster (and its CAs)."),
                    "server" => required(AttributeType::String, "`https://` URL of kube-apiserver (or of its proxy)."),
                    "key_algorithm" => optional_computed(AttributeType::String,
                        "Key algorithm of the CAs: `p256` (kca's default), `p384` or `ed25519`. Changing it replaces the cluster."),
                    "labels" => optional(string_map(), "Free-form labels."),
                    "ca_pem" => computed(string_map(),
                        "PEM bundle of each CA, by kind (`etcd`, `control-plane`, `operators`, `kubelet`, `aggregation`): \
                         every live generation, as `…/authorities/{kind}/ca.pem` serves it."),
                    "ca_fingerprints" => computed(string_map(),
                        "SHA-256 fingerprint of the current (signing) generation of each CA, by kind."),
                },
                blocks: map! {
                    "policy" => NestedBlock::Group(Block {
                        description: Description::markdown(
                            "Issuance policy. Attributes left out keep kca's value (its default, or whatever is set there).",
                        ),
                        attributes: map! {
                            "default_ttl_seconds" => optional_computed(number(), "TTL when a request gives none."),
                            "min_ttl_seconds" => optional_computed(number(), "Shortest TTL a request may ask for."),
                            "max_ttl_seconds" => optional_computed(number(), "Longest TTL a request may ask for."),
                            "max_groups" => optional_computed(number(), "Most groups in one certificate."),
                            "allowed_groups" => optional_computed(string_list(),
                                "Glob patterns (`*`, `?`) that every requested group must match one of."),
                            "allow_system_masters" => optional_computed(AttributeType::Bool,
                                "Whether `system:masters` may be issued (and then only to an admin token)."),
                            "allowed_profiles" => optional_computed(string_list(),
                                "Component certificate profiles (`GET /v1/profiles`) that may be issued, to an admin \
                                 token of the cluster only (`kca_component_certificate`). Changing it needs an admin token."),
                        },
                        ..Default::default()
                    }),
                },
                ..Default::default()
            },
        })
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: State,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(State, ValueEmpty)> {
        let client = self.0.client(diags)?;
        let id = state.id(diags)?;
        match State::fetch(client, &id, state.labels.is_null()).await {
            Ok(fresh) => Some((fresh, private_state)),
            // Deleted outside Terraform: drop it from the state, the next plan creates it again.
            Err(ApiError::NotFound(_)) => None,
            Err(e) => {
                e.report(diags, "Reading the cluster");
                Some((state, private_state))
            }
        }
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        proposed: State,
        _config: State,
        _meta: ValueEmpty,
    ) -> Option<(State, ValueEmpty)> {
        let mut planned = proposed;
        planned.unknown_computed();
        Some((planned, ValueEmpty::default()))
    }

    async fn plan_update<'a>(
        &self,
        _diags: &mut Diagnostics,
        prior: State,
        proposed: State,
        _config: State,
        prior_private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(State, ValueEmpty, Vec<AttributePath>)> {
        let mut planned = proposed;
        let mut replace = Vec::new();
        // kca renames nothing and never changes a CA's key type: both mean a new cluster.
        if planned.name != prior.name {
            replace.push(AttributePath::new("name"));
        }
        if planned.key_algorithm != prior.key_algorithm {
            replace.push(AttributePath::new("key_algorithm"));
        }
        if !replace.is_empty() {
            planned.unknown_computed();
        }
        Some((planned, prior_private, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: State,
        prior_private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<ValueEmpty> {
        Some(prior_private)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: State,
        _config: State,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(State, ValueEmpty)> {
        let client = self.0.client(diags)?;
        let mut body = json!({
            "name": planned.name.as_ref_option(),
            "server": planned.server.as_ref_option(),
        });
        if let Value::Value(algorithm) = &planned.key_algorithm {
            body["key_algorithm"] = json!(algorithm);
        }
        if planned.labels.is_value() {
            body["labels"] = json!(known_labels(&planned.labels));
        }
        if let Value::Value(policy) = &planned.policy {
            body["policy"] = policy.to_json();
        }
        let created = match client.create_cluster(&body).await {
            Ok(cluster) => cluster,
            Err(e) => {
                e.report(diags, "Creating the cluster");
                return None;
            }
        };
        let null_labels = planned.labels.is_null();
        match client.list_authorities(&created.id).await {
            Ok(authorities) => Some((State::from_api(created, &authorities, null_labels), private)),
            Err(e) => {
                // The cluster exists: keep it in the state (tainted by the error, so the next apply
                // replaces it) rather than leave it behind unknown to Terraform.
                e.report(diags, "Reading the new cluster's authorities");
                Some((State::from_api(created, &[], null_labels), private))
            }
        }
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: State,
        planned: State,
        _config: State,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(State, ValueEmpty)> {
        let client = self.0.client(diags)?;
        let id = prior.id(diags)?;
        // A JSON merge patch of what changed: `server`, the whole policy, and per label key
        // (null removes a key), against the refreshed prior state.
        let mut patch = serde_json::Map::new();
        if planned.server != prior.server {
            patch.insert("server".into(), json!(planned.server.as_ref_option()));
        }
        if planned.policy != prior.policy
            && let Value::Value(policy) = &planned.policy
        {
            patch.insert("policy".into(), policy.to_json());
        }
        let (old, new) = (known_labels(&prior.labels), known_labels(&planned.labels));
        let mut labels = serde_json::Map::new();
        for key in old.keys().filter(|k| !new.contains_key(*k)) {
            labels.insert(key.clone(), serde_json::Value::Null);
        }
        for (key, value) in new.iter().filter(|(k, v)| old.get(*k) != Some(v)) {
            labels.insert(key.clone(), json!(value));
        }
        if !labels.is_empty() {
            patch.insert("labels".into(), serde_json::Value::Object(labels));
        }
        let result = if patch.is_empty() {
            State::fetch(client, &id, planned.labels.is_null()).await
        } else {
            match client.patch_cluster(&id, &serde_json::Value::Object(patch)).await {
                Ok(cluster) => State::with_authorities(client, cluster, planned.labels.is_null()).await,
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(state) => Some((state, private)),
            Err(e) => {
                e.report(diags, "Updating the cluster");
                None
            }
        }
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: State,
        _private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<()> {
        let client = self.0.client(diags)?;
        let id = prior.id(diags)?;
        match client.delete_cluster(&id).await {
            Ok(()) | Err(ApiError::NotFound(_)) => Some(()),
            Err(e) => {
                e.report(diags, "Deleting the cluster");
                None
            }
        }
    }

    /// `terraform import kca_cluster.x <id or name>`.
    async fn import<'a>(&self, diags: &mut Diagnostics, id: String) -> Option<(State, ValueEmpty)> {
        let client = self.0.client(diags)?;
        match State::fetch(client, &id, true).await {
            Ok(state) => Some((state, ValueEmpty::default())),
            Err(e) => {
                e.report(diags, &format!("Importing cluster {id:?}"));
                None
            }
        }
    }
}
