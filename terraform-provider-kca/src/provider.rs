//! The `kca` provider: its configuration, and the one API client every resource shares.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeType, Block, Description, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{DynamicDataSource, DynamicResource, Provider, map};

use crate::client::Client;
use crate::diag;
use crate::schema::{Str, optional, sensitive};
use crate::{
    authority, authority_rotation, client_bundle, cluster, cluster_endpoints, component_certificate,
    kubeconfig,
};

/// The client, set once by `configure`. Resources are built before Terraform configures the
/// provider, so they hold this slot rather than a client.
#[derive(Clone, Default)]
pub struct Shared(Arc<OnceLock<Client>>);

impl Shared {
    pub fn client(&self, diags: &mut tf_provider::Diagnostics) -> Option<&Client> {
        let client = self.0.get();
        if client.is_none() {
            diag::error(diags, "The kca provider was used before it was configured", "");
        }
        client
    }
}

#[derive(Default)]
pub struct KcaProvider {
    shared: Shared,
}

#[derive(Serialize, Deserialize)]
pub struct Config {
    url: Str,
    token: Str,
    ca_cert_pem: Str,
}

/// A configured value, else the environment variable; an unknown value is an error because the
/// provider must reach kca while planning.
fn setting(
    diags: &mut tf_provider::Diagnostics,
    name: &str,
    value: Str,
    env: &str,
) -> Option<Option<String>> {
    match value {
        Value::Value(v) if !v.is_empty() => Some(Some(v)),
        Value::Unknown => {
            diag::error(
                diags,
                format!("The provider's `{name}` is not known yet"),
                "The kca provider needs it to plan; set it from a value known before apply.",
            );
            None
        }
        _ => Some(std::env::var(env).ok().filter(|v| !v.is_empty())),
    }
}

/// `ca_cert_pem` / `KCA_CACERT` hold either the PEM text or the path of a PEM file.
fn load_ca(diags: &mut tf_provider::Diagnostics, text_or_path: String) -> Option<String> {
    if text_or_path.trim_start().starts_with("-----BEGIN") {
        return Some(text_or_path);
    }
    match std::fs::read_to_string(&text_or_path) {
        Ok(pem) => Some(pem),
        Err(e) => {
            diag::error(
                diags,
                "Cannot read the kca CA certificate",
                format!(
                    "ca_cert_pem / KCA_CACERT is neither PEM text nor a readable file ({text_or_path}): {e}"
                ),
            );
            None
        }
    }
}

#[async_trait]
impl Provider for KcaProvider {
    type Config<'a> = Config;
    type MetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut tf_provider::Diagnostics) -> Option<Schema> {
        Some(Schema {
            version: 1,
            block: Block {
                description: Description::markdown(
                    "kca, a private certificate authority for Kubernetes clusters",
                ),
                attributes: map! {
                    "url" => optional(AttributeType::String,
                        "Base URL of kca, e.g. `https://kca.example.com:8443`. Default: `KCA_URL`."),
                    "token" => sensitive(optional(AttributeType::String,
                        "Bearer token (`kca token create`). Default: `KCA_TOKEN`. Public reads (CA bundles, CRLs) work without one.")),
                    "ca_cert_pem" => optional(AttributeType::String,
                        "PEM of the CA that signed kca's TLS certificate, or the path of a PEM file; \
                         only this CA is then trusted. Default: `KCA_CACERT`, else the system's roots."),
                },
                ..Default::default()
            },
        })
    }

    async fn configure<'a>(
        &self,
        diags: &mut tf_provider::Diagnostics,
        _terraform_version: String,
        config: Self::Config<'a>,
    ) -> Option<()> {
        let url = setting(diags, "url", config.url, "KCA_URL");
        let token = setting(diags, "token", config.token, "KCA_TOKEN");
        let ca = setting(diags, "ca_cert_pem", config.ca_cert_pem, "KCA_CACERT");
        let (url, token, ca) = (url?, token?, ca?);
        let Some(url) = url else {
            diag::error(diags, "The kca provider needs a URL", "Set `url` in the provider block or KCA_URL.");
            return None;
        };
        let ca = match ca {
            Some(text_or_path) => Some(load_ca(diags, text_or_path)?),
            None => None,
        };
        match Client::new(&url, token, ca.as_deref()) {
            Ok(client) => {
                // Terraform configures a provider instance once; a second call keeps the first.
                let _ = self.shared.0.set(client);
                Some(())
            }
            Err(e) => {
                diag::error(diags, "Invalid kca provider configuration", e);
                None
            }
        }
    }

    fn get_resources(
        &self,
        _diags: &mut tf_provider::Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicResource>>> {
        Some(map! {
            "cluster" => cluster::ClusterResource(self.shared.clone()),
            "kubeconfig" => kubeconfig::KubeconfigResource(self.shared.clone()),
            "component_certificate" => component_certificate::ComponentCertificateResource(self.shared.clone()),
            "authority_rotation" => authority_rotation::AuthorityRotationResource(self.shared.clone()),
        })
    }

    fn get_data_sources(
        &self,
        _diags: &mut tf_provider::Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicDataSource>>> {
        Some(map! {
            "authority" => authority::AuthorityDataSource(self.shared.clone()),
            "client_bundle" => client_bundle::ClientBundleDataSource(self.shared.clone()),
            "cluster_endpoints" => cluster_endpoints::ClusterEndpointsDataSource(self.shared.clone()),
        })
    }
}
