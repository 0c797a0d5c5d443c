//! `kca_component_certificate`: a component certificate (etcd, apiserver, kubelet, front proxy…)
//! issued under one of kca's profiles, renewed by replacement and revoked on destroy.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeType, Block, Description, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource, map};

use crate::client::{ApiError, NewComponentCertificate};
use crate::diag;
use crate::provider::Shared;
use crate::renewal;
use crate::schema::{Str, Strings, computed, known_strings, optional, required, sensitive, string_list};

pub struct ComponentCertificateResource(pub Shared);

/// Why Terraform destroys a certificate: it is no longer used (replaced or removed).
const DESTROY_REASON: &str = "cessationOfOperation";

#[derive(Clone, Default, Serialize, Deserialize)]
pub struct State {
    id: Str,
    cluster: Str,
    profile: Str,
    common_name: Str,
    dns_names: Strings,
    ip_addresses: Strings,
    ttl_seconds: Value<i64>,
    key_algorithm: Str,
    csr_pem: Str,
    cluster_domain: Str,
    service_ip: Str,
    early_renewal_seconds: Value<i64>,
    authority: Str,
    certificate_pem: Str,
    private_key_pem: Str,
    ca_pem: Str,
    serial: Str,
    not_after: Str,
    fingerprint_sha256: Str,
    status: Str,
}

impl State {
    /// The inputs that make the certificate: changing any of them issues a new one.
    fn replaced_inputs(&self, prior: &State) -> Vec<AttributePath> {
        [
            ("cluster", self.cluster != prior.cluster),
            ("profile", self.profile != prior.profile),
            ("common_name", self.common_name != prior.common_name),
            ("dns_names", self.dns_names != prior.dns_names),
            ("ip_addresses", self.ip_addresses != prior.ip_addresses),
            ("ttl_seconds", self.ttl_seconds != prior.ttl_seconds),
            ("key_algorithm", self.key_algorithm != prior.key_algorithm),
            ("csr_pem", self.csr_pem != prior.csr_pem),
            ("cluster_domain", self.cluster_domain != prior.cluster_domain),
            ("service_ip", self.service_ip != prior.service_ip),
        ]
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| AttributePath::new(name))
        .collect()
    }

    fn unknown_computed(&mut self) {
        for value in [
            &mut self.id,
            &mut self.certificate_pem,
            &mut self.private_key_pem,
            &mut self.ca_pem,
            &mut self.serial,
            &mut self.not_after,
            &mut self.fingerprint_sha256,
            &mut self.status,
        ] {
            *value = Value::Unknown;
        }
    }

    fn cluster_and_serial(&self, diags: &mut Diagnostics) -> Option<(String, String)> {
        match (self.cluster.as_ref_option(), self.serial.as_ref_option()) {
            (Some(cluster), Some(serial)) => Some((cluster.clone(), serial.clone())),
            _ => {
                diag::error(diags, "kca_component_certificate has no cluster or serial in its state", "");
                None
            }
        }
    }
}

fn text(value: &Str) -> Option<&str> {
    value.as_ref_option().map(String::as_str)
}

#[async_trait]
impl Resource for ComponentCertificateResource {
    type State<'a> = State;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        let replaces = " Changing it issues a new certificate (and revokes the old one).";
        Some(Schema {
            version: 1,
            block: Block {
                description: Description::markdown(
                    "A component certificate issued by kca under a profile (`GET /v1/profiles`). The \
                     cluster's policy must name the profile in `allowed_profiles`, and the token must be \
                     an admin of the cluster. It is replaced when it is revoked or deleted in kca, or once \
                     `now >= not_after - early_renewal_seconds` (at the next plan); destroying it revokes \
                     it. The private key kca generates is kept in the Terraform state (sensitive): protect \
                     the state, or pass `csr_pem`.",
                ),
                attributes: map! {
                    "id" => computed(AttributeType::String, "The certificate's serial."),
                    "cluster" => required(AttributeType::String,
                        &format!("Cluster id (preferred: `kca_cluster.x.id`) or name.{replaces}")),
                    "profile" => required(AttributeType::String,
                        &format!("Profile name, e.g. `etcd-peer`, `apiserver`, `front-proxy-client`.{replaces}")),
                    "common_name" => optional(AttributeType::String,
                        &format!("The CN, where the profile lets the request choose it.{replaces}")),
                    "dns_names" => optional(string_list(),
                        &format!("DNS names, for serving profiles (declared in the cluster's policy).{replaces}")),
                    "ip_addresses" => optional(string_list(),
                        &format!("IP addresses, for serving profiles (declared in the cluster's policy).{replaces}")),
                    "ttl_seconds" => optional(AttributeType::Number,
                        &format!("Lifetime; the profile's default when unset.{replaces}")),
                    "key_algorithm" => optional(AttributeType::String,
                        &format!("Key kca generates: `p256` (default), `p384` or `ed25519`; not with `csr_pem`.{replaces}")),
                    "csr_pem" => optional(AttributeType::String,
                        &format!("A PEM CSR whose key to certify: the private key then stays out of kca and \
                                  out of the Terraform state.{replaces}")),
                    "cluster_domain" => optional(AttributeType::String,
                        &format!("`apiserver` only: the cluster DNS domain (kca's default `cluster.local`).{replaces}")),
                    "service_ip" => optional(AttributeType::String,
                        &format!("`apiserver` only: the `kubernetes` service IP (kca's default `10.96.0.1`).{replaces}")),
                    "early_renewal_seconds" => optional(AttributeType::Number,
                        "Replace the certificate this long before it expires (default 0: once expired)."),
                    "authority" => computed(AttributeType::String, "The CA kind that signs the profile."),
                    "certificate_pem" => computed(AttributeType::String, "The certificate, PEM."),
                    "private_key_pem" => sensitive(computed(AttributeType::String,
                        "Its private key, PKCS#8 PEM (null with `csr_pem`).")),
                    "ca_pem" => computed(AttributeType::String,
                        "The bundle of the signing CA kind when it was issued (every live generation)."),
                    "serial" => computed(AttributeType::String, "Serial, uppercase hex."),
                    "not_after" => computed(AttributeType::String, "Expiry, RFC 3339."),
                    "fingerprint_sha256" => computed(AttributeType::String, "SHA-256 of the certificate's DER."),
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
            // The key is never served again: it stays as issued.
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
                e.report(diags, "Reading the component certificate");
                Some((state, private_state))
            }
        }
    }

    /// Checks the profile against kca's list, so a typo fails the plan, and names its CA kind.
    async fn plan_create<'a>(
        &self,
        diags: &mut Diagnostics,
        proposed: State,
        _config: State,
        _meta: ValueEmpty,
    ) -> Option<(State, ValueEmpty)> {
        let mut planned = proposed;
        planned.unknown_computed();
        planned.authority = Value::Unknown;
        if let (Some(client), Value::Value(name)) = (self.0.client(diags), &planned.profile) {
            match client.list_profiles().await {
                Ok(profiles) => match profiles.iter().find(|p| &p.name == name) {
                    Some(profile) => planned.authority = Value::Value(profile.authority.clone()),
                    None => {
                        let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
                        diag::error_at(
                            diags,
                            format!("kca has no profile {name:?}"),
                            format!("Valid profiles: {}.", names.join(", ")),
                            AttributePath::new("profile"),
                        );
                        return None;
                    }
                },
                Err(e) => e.report(diags, "Reading kca's certificate profiles"),
            }
        }
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
        if let Some(reason) = renewal::reason(
            &planned.serial,
            &planned.status,
            &planned.not_after,
            &planned.early_renewal_seconds,
        ) {
            // Terraform replaces only for a path whose value changes: `status` becomes unknown.
            replace.push(AttributePath::new("status"));
            diag::warning(diags, "kca_component_certificate will be renewed", reason);
        }
        if !replace.is_empty() {
            planned.unknown_computed();
            if planned.profile != prior.profile {
                planned.authority = Value::Unknown;
            }
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
        let (Some(cluster), Some(profile), Some(dns_names), Some(ip_addresses)) = (
            text(&planned.cluster),
            text(&planned.profile),
            known_strings(&planned.dns_names),
            known_strings(&planned.ip_addresses),
        ) else {
            diag::error(
                diags,
                "kca_component_certificate: cluster, profile and names must be known to issue",
                "",
            );
            return None;
        };
        let request = NewComponentCertificate {
            profile,
            common_name: text(&planned.common_name),
            dns_names: &dns_names,
            ip_addresses: &ip_addresses,
            ttl_seconds: planned.ttl_seconds.as_ref_option().copied(),
            key_algorithm: text(&planned.key_algorithm),
            csr_pem: text(&planned.csr_pem),
            cluster_domain: text(&planned.cluster_domain),
            service_ip: text(&planned.service_ip),
        };
        let issued = match client.issue_component_certificate(cluster, &request).await {
            Ok(issued) => issued,
            Err(e) => {
                e.report(diags, &format!("Issuing a {profile} certificate"));
                return None;
            }
        };
        let authority = match &planned.authority {
            Value::Value(kind) => Value::Value(kind.clone()),
            // Unknown while planning if the profile list could not be read then.
            _ => match client.list_profiles().await {
                Ok(profiles) => profiles
                    .into_iter()
                    .find(|p| p.name == profile)
                    .map_or(Value::Null, |p| Value::Value(p.authority)),
                Err(_) => Value::Null,
            },
        };
        Some((
            State {
                id: Value::Value(issued.serial.clone()),
                authority,
                certificate_pem: Value::Value(issued.certificate_pem),
                private_key_pem: issued.private_key_pem.map_or(Value::Null, Value::Value),
                ca_pem: Value::Value(issued.ca_pem),
                serial: Value::Value(issued.serial),
                not_after: Value::Value(issued.not_after),
                fingerprint_sha256: Value::Value(issued.fingerprint_sha256),
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
