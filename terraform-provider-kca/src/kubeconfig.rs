//! `kca_kubeconfig`: a user kubeconfig, renewed by replacement and revoked on destroy.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeType, Block, Description, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource, map};

use crate::client::{ApiError, NewKubeconfig};
use crate::diag;
use crate::provider::Shared;
use crate::renewal;
use crate::schema::{Str, Strings, computed, known_strings, optional, required, sensitive, string_list};

pub struct KubeconfigResource(pub Shared);

/// Why Terraform destroys a kubeconfig: it is no longer used (replaced or removed).
const DESTROY_REASON: &str = "cessationOfOperation";

#[derive(Clone, Default, Serialize, Deserialize)]
pub struct State {
    id: Str,
    cluster: Str,
    user: Str,
    groups: Strings,
    ttl_seconds: Value<i64>,
    early_renewal_seconds: Value<i64>,
    key_algorithm: Str,
    csr_pem: Str,
    kubeconfig: Str,
    certificate_pem: Str,
    private_key_pem: Str,
    serial: Str,
    not_after: Str,
    status: Str,
}

impl State {
    /// The inputs that identify the certificate: changing any of them issues a new one.
    fn replaced_inputs(&self, prior: &State) -> Vec<AttributePath> {
        [
            ("cluster", self.cluster != prior.cluster),
            ("user", self.user != prior.user),
            ("groups", self.groups != prior.groups),
            ("ttl_seconds", self.ttl_seconds != prior.ttl_seconds),
            ("key_algorithm", self.key_algorithm != prior.key_algorithm),
            ("csr_pem", self.csr_pem != prior.csr_pem),
        ]
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| AttributePath::new(name))
        .collect()
    }

    fn unknown_computed(&mut self) {
        for value in [
            &mut self.id,
            &mut self.kubeconfig,
            &mut self.certificate_pem,
            &mut self.private_key_pem,
            &mut self.serial,
            &mut self.not_after,
            &mut self.status,
        ] {
            *value = Value::Unknown;
        }
    }

    /// Why the certificate in the state must be replaced now, if it must.
    fn renewal_reason(&self) -> Option<String> {
        renewal::reason(&self.serial, &self.status, &self.not_after, &self.early_renewal_seconds)
    }

    fn cluster_and_serial(&self, diags: &mut Diagnostics) -> Option<(String, String)> {
        match (self.cluster.as_ref_option(), self.serial.as_ref_option()) {
            (Some(cluster), Some(serial)) => Some((cluster.clone(), serial.clone())),
            _ => {
                diag::error(diags, "kca_kubeconfig has no cluster or serial in its state", "");
                None
            }
        }
    }
}

#[async_trait]
impl Resource for KubeconfigResource {
    type State<'a> = State;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        let replaces = " Changing it issues a new kubeconfig (and revokes the old one).";
        Some(Schema {
            version: 1,
            block: Block {
                description: Description::markdown(
                    "A short-lived user kubeconfig issued by kca. It is replaced when it is revoked or \
                     deleted in kca, or once `now >= not_after - early_renewal_seconds` (at the next plan); \
                     destroying it revokes its certificate. The private key is kept in the Terraform state \
                     (sensitive): protect the state.",
                ),
                attributes: map! {
                    "id" => computed(AttributeType::String, "The certificate's serial."),
                    "cluster" => required(AttributeType::String,
                        &format!("Cluster id (preferred: `kca_cluster.x.id`, which follows a replaced cluster) or name.{replaces}")),
                    "user" => required(AttributeType::String, &format!("Kubernetes user: the certificate's CN.{replaces}")),
                    "groups" => optional(string_list(), &format!("Kubernetes groups, one O each, in order.{replaces}")),
                    "ttl_seconds" => optional(AttributeType::Number,
                        &format!("Lifetime; the cluster policy's default when unset.{replaces}")),
                    "early_renewal_seconds" => optional(AttributeType::Number,
                        "Replace the kubeconfig this long before it expires (default 0: once expired)."),
                    "key_algorithm" => optional(AttributeType::String,
                        &format!("Key kca generates: `p256` (default), `p384` or `ed25519`; not with `csr_pem`.{replaces}")),
                    "csr_pem" => optional(AttributeType::String,
                        &format!("A PEM CSR whose public key to certify instead of having kca generate a key: the \
                                  private key then stays out of kca and out of the Terraform state, and out of \
                                  `kubeconfig` (add it yourself).{replaces}")),
                    "kubeconfig" => sensitive(computed(AttributeType::String,
                        "The kubeconfig, YAML, with the key embedded (unless `csr_pem` is set).")),
                    "certificate_pem" => computed(AttributeType::String, "The client certificate."),
                    "private_key_pem" => sensitive(computed(AttributeType::String,
                        "The client private key (null with `csr_pem`).")),
                    "serial" => computed(AttributeType::String, "Serial of the certificate, uppercase hex."),
                    "not_after" => computed(AttributeType::String, "Expiry, RFC 3339."),
                    "status" => computed(AttributeType::String, "`active`, `expired` or `revoked`, as kca last said."),
                },
                ..Default::default()
            },
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: State) -> Option<()> {
        if let Value::Value(n) = config.early_renewal_seconds
            && n < 0
        {
            diag::error_at(
                diags,
                "early_renewal_seconds must not be negative",
                "",
                AttributePath::new("early_renewal_seconds"),
            );
        }
        if config.csr_pem.is_value() && config.key_algorithm.is_value() {
            diag::error_at(
                diags,
                "key_algorithm applies only when kca generates the key",
                "Leave it out when csr_pem is set: the CSR's key is certified.",
                AttributePath::new("key_algorithm"),
            );
        }
        if let Value::Value(n) = config.ttl_seconds
            && n <= 0
        {
            diag::error_at(diags, "ttl_seconds must be positive", "", AttributePath::new("ttl_seconds"));
        }
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: State,
        private_state: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(State, ValueEmpty)> {
        let client = self.0.client(diags)?;
        let (cluster, serial) = state.cluster_and_serial(diags)?;
        match client.get_certificate(&cluster, &serial).await {
            // The key and kubeconfig are never served again: they stay as issued.
            Ok(cert) => Some((
                State {
                    status: Value::Value(cert.status),
                    not_after: Value::Value(cert.not_after),
                    certificate_pem: Value::Value(cert.certificate_pem),
                    ..state
                },
                private_state,
            )),
            // Unknown to kca (or its cluster deleted): forget it; the next plan issues a new one.
            Err(ApiError::NotFound(_)) => None,
            Err(e) => {
                e.report(diags, "Reading the kubeconfig's certificate");
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
        diags: &mut Diagnostics,
        prior: State,
        proposed: State,
        _config: State,
        prior_private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(State, ValueEmpty, Vec<AttributePath>)> {
        let mut planned = proposed;
        let mut replace = planned.replaced_inputs(&prior);
        if let Some(reason) = planned.renewal_reason() {
            // Terraform replaces only for a path whose value changes: `status` becomes unknown.
            replace.push(AttributePath::new("status"));
            diag::warning(diags, "kca_kubeconfig will be renewed", reason);
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
        let (Some(cluster), Some(user), Some(groups)) =
            (planned.cluster.as_ref_option(), planned.user.as_ref_option(), known_strings(&planned.groups))
        else {
            diag::error(diags, "kca_kubeconfig: cluster, user and groups must be known to issue", "");
            return None;
        };
        let request = NewKubeconfig {
            user,
            groups: &groups,
            ttl_seconds: planned.ttl_seconds.as_ref_option().copied(),
            key_algorithm: planned.key_algorithm.as_ref_option().map(String::as_str),
            csr_pem: planned.csr_pem.as_ref_option().map(String::as_str),
        };
        let issued = match client.issue_kubeconfig(cluster, &request).await {
            Ok(issued) => issued,
            Err(e) => {
                e.report(diags, "Issuing the kubeconfig");
                return None;
            }
        };
        Some((
            State {
                id: Value::Value(issued.serial.clone()),
                kubeconfig: Value::Value(issued.kubeconfig),
                certificate_pem: Value::Value(issued.certificate_pem),
                private_key_pem: issued.private_key_pem.map_or(Value::Null, Value::Value),
                serial: Value::Value(issued.serial),
                not_after: Value::Value(issued.not_after),
                status: Value::Value("active".into()),
                ..planned
            },
            private,
        ))
    }

    /// Only `early_renewal_seconds` changes in place, and it lives in the state alone.
    async fn update<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: State,
        planned: State,
        _config: State,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(State, ValueEmpty)> {
        Some((planned, private))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: State,
        _private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<()> {
        let client = self.0.client(diags)?;
        let (cluster, serial) = prior.cluster_and_serial(diags)?;
        // Revoking is idempotent in kca; 404 means the certificate (or its cluster) is gone already.
        match client.revoke_certificate(&cluster, &serial, DESTROY_REASON).await {
            Ok(_) | Err(ApiError::NotFound(_)) => Some(()),
            Err(e) => {
                e.report(diags, &format!("Revoking certificate {serial}"));
                None
            }
        }
    }
}
