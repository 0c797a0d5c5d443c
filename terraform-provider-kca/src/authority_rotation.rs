//! `kca_authority_rotation`: one rotation of a cluster's CA kind. Creating it rotates (a new
//! generation signs, the previous one keeps verifying as `retiring`); `retire_previous` then
//! retires the previous generation; a change of `triggers` rotates again.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeType, Block, Description, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource, map};

use crate::client::{ApiError, Authority, Client};
use crate::diag;
use crate::provider::Shared;
use crate::schema::{Str, computed, optional, required, string_map};

pub struct AuthorityRotationResource(pub Shared);

#[derive(Clone, Default, Serialize, Deserialize)]
pub struct State {
    id: Str,
    cluster: Str,
    kind: Str,
    key_storage: Str,
    triggers: Value<BTreeMap<String, Value<String>>>,
    retire_previous: Value<bool>,
    force_retire: Value<bool>,
    generation: Value<i64>,
    previous_generation: Value<i64>,
    previous_retired: Value<bool>,
    fingerprint_sha256: Str,
    certificate_pem: Str,
    not_after: Str,
}

impl State {
    fn replaced_inputs(&self, prior: &State) -> Vec<AttributePath> {
        [
            ("cluster", self.cluster != prior.cluster),
            ("kind", self.kind != prior.kind),
            ("key_storage", self.key_storage != prior.key_storage),
            ("triggers", self.triggers != prior.triggers),
        ]
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| AttributePath::new(name))
        .collect()
    }

    fn unknown_computed(&mut self) {
        self.id = Value::Unknown;
        self.generation = Value::Unknown;
        self.previous_generation = Value::Unknown;
        self.previous_retired = Value::Unknown;
        self.fingerprint_sha256 = Value::Unknown;
        self.certificate_pem = Value::Unknown;
        self.not_after = Value::Unknown;
    }

    fn wants_retired(&self) -> bool {
        self.retire_previous.as_ref_option().copied().unwrap_or(false)
    }

    fn cluster_and_kind(&self, diags: &mut Diagnostics) -> Option<(String, String)> {
        match (self.cluster.as_ref_option(), self.kind.as_ref_option()) {
            (Some(cluster), Some(kind)) => Some((cluster.clone(), kind.clone())),
            _ => {
                diag::error(diags, "kca_authority_rotation: cluster and kind must be known", "");
                None
            }
        }
    }
}

/// Whether `generation` is still in the CA's bundles (`active` or `retiring`).
fn is_live(authority: &Authority, generation: i64) -> bool {
    authority.generations.iter().any(|g| g.generation == generation)
}

/// Retire the previous generation if asked and still live; the state's `previous_retired`.
async fn retire_if_asked(
    client: &Client,
    diags: &mut Diagnostics,
    state: &State,
    cluster: &str,
    kind: &str,
    authority: &Authority,
) -> Option<bool> {
    let Value::Value(previous) = state.previous_generation else {
        return Some(true); // nothing before it
    };
    if !is_live(authority, previous) {
        return Some(true);
    }
    if !state.wants_retired() {
        return Some(false);
    }
    let force = state.force_retire.as_ref_option().copied().unwrap_or(false);
    match client.retire_generation(cluster, kind, previous, force).await {
        Ok(_) => Some(true),
        Err(e) => {
            e.report(diags, &format!("Retiring generation {previous} of the {kind} CA of cluster {cluster}"));
            None
        }
    }
}

#[async_trait]
impl Resource for AuthorityRotationResource {
    type State<'a> = State;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        let rotates = " Changing it rotates again.";
        Some(Schema {
            version: 1,
            block: Block {
                description: Description::markdown(
                    "One rotation of a cluster's CA: creating it makes a new generation the signer, and \
                     the previous one stays in every bundle as `retiring` until it is retired \
                     (`retire_previous`). A change of `triggers` (or `cluster`, `kind`, `key_storage`) \
                     rotates again. Destroying it only forgets it: a rotation cannot be undone. Needs an \
                     admin token of the cluster.",
                ),
                attributes: map! {
                    "id" => computed(AttributeType::String, "`<cluster>/<kind>/<generation>`."),
                    "cluster" => required(AttributeType::String, &format!("Cluster id or name.{rotates}")),
                    "kind" => required(AttributeType::String,
                        &format!("`etcd`, `control-plane`, `operators`, `kubelet` or `aggregation`.{rotates}")),
                    "key_storage" => optional(AttributeType::String,
                        &format!("`sealed` or `pkcs11` for the new key; by default where the current one is.{rotates}")),
                    "triggers" => optional(string_map(),
                        &format!("Arbitrary values (a date, a ticket): any change rotates again.{rotates}")),
                    "retire_previous" => optional(AttributeType::Bool,
                        "Retire the previous generation once rotated (it then leaves every bundle and what it \
                         signed stops verifying). Refused by kca while it still vouches for unexpired, unrevoked \
                         certificates, unless `force_retire`. Setting it later retires in place."),
                    "force_retire" => optional(AttributeType::Bool,
                        "With `retire_previous`: revoke what the previous generation still vouches for first \
                         (reason `cessationOfOperation`)."),
                    "generation" => computed(AttributeType::Number, "The generation this rotation made (the signer then)."),
                    "previous_generation" => computed(AttributeType::Number, "The generation it replaced as signer."),
                    "previous_retired" => computed(AttributeType::Bool, "Whether the previous generation is retired."),
                    "fingerprint_sha256" => computed(AttributeType::String, "SHA-256 of the new CA certificate."),
                    "certificate_pem" => computed(AttributeType::String, "The new CA certificate."),
                    "not_after" => computed(AttributeType::String, "Expiry of the new CA certificate, RFC 3339."),
                },
                ..Default::default()
            },
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: State) -> Option<()> {
        if config.force_retire == Value::Value(true) && config.retire_previous != Value::Value(true) {
            diag::error_at(
                diags,
                "force_retire applies only with retire_previous = true",
                "",
                AttributePath::new("force_retire"),
            );
        }
        Some(())
    }

    /// The rotation stays as made; only whether the previous generation is still live is read,
    /// so that retiring it outside Terraform (or not yet) shows in the plan.
    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: State,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(State, ValueEmpty)> {
        let client = self.0.client(diags)?;
        let (cluster, kind) = state.cluster_and_kind(diags)?;
        match client.get_authority(&cluster, &kind).await {
            Ok(authority) => {
                let previous_retired = match state.previous_generation {
                    Value::Value(previous) => !is_live(&authority, previous),
                    _ => true,
                };
                Some((State { previous_retired: Value::Value(previous_retired), ..state }, private_state))
            }
            // The cluster is gone, and its CAs with it: forget the rotation.
            Err(ApiError::NotFound(_)) => None,
            Err(e) => {
                e.report(diags, "Reading the rotated CA");
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
        let replace = planned.replaced_inputs(&prior);
        if !replace.is_empty() {
            planned.unknown_computed();
        } else if planned.wants_retired() && prior.previous_retired == Value::Value(false) {
            // retire_previous set later, or the previous generation is still live: retire it.
            planned.previous_retired = Value::Unknown;
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
        let (cluster, kind) = planned.cluster_and_kind(diags)?;
        let rotated = match client
            .rotate_authority(&cluster, &kind, planned.key_storage.as_ref_option().map(String::as_str))
            .await
        {
            Ok(rotated) => rotated,
            Err(e) => {
                e.report(diags, &format!("Rotating the {kind} CA of cluster {cluster}"));
                return None;
            }
        };
        // The generation it replaced: the newest one left `retiring`.
        let previous = rotated
            .generations
            .iter()
            .filter(|g| g.generation < rotated.generation && g.state == "retiring")
            .map(|g| g.generation)
            .max();
        let mut state = State {
            id: Value::Value(format!("{cluster}/{kind}/{}", rotated.generation)),
            generation: Value::Value(rotated.generation),
            previous_generation: previous.map_or(Value::Null, Value::Value),
            previous_retired: Value::Value(previous.is_none()),
            fingerprint_sha256: Value::Value(rotated.fingerprint_sha256.clone()),
            certificate_pem: Value::Value(rotated.certificate_pem.clone()),
            not_after: Value::Value(rotated.not_after.clone()),
            ..planned
        };
        match retire_if_asked(client, diags, &state, &cluster, &kind, &rotated).await {
            Some(retired) => state.previous_retired = Value::Value(retired),
            // The rotation happened: keep it in the state (tainted by the error), not lost.
            None => return Some((state, private)),
        }
        Some((state, private))
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
        let mut state = planned;
        if state.previous_retired.is_unknown() {
            let client = self.0.client(diags)?;
            let (cluster, kind) = state.cluster_and_kind(diags)?;
            let authority = match client.get_authority(&cluster, &kind).await {
                Ok(authority) => authority,
                Err(e) => {
                    e.report(diags, "Reading the rotated CA");
                    return None;
                }
            };
            match retire_if_asked(client, diags, &state, &cluster, &kind, &authority).await {
                Some(retired) => state.previous_retired = Value::Value(retired),
                None => {
                    state.previous_retired = prior.previous_retired;
                    return Some((state, private));
                }
            }
        }
        Some((state, private))
    }

    /// A rotation cannot be undone: destroying it leaves kca as it is.
    async fn destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: State,
        _private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<()> {
        Some(())
    }
}
