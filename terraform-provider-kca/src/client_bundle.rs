//! Data source `kca_client_bundle`: the CA bundle and CRLs a proxy in front of kube-apiserver
//! needs to verify (and refuse revoked) client certificates.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeType, Block, Description, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{DataSource, Diagnostics, map};

use crate::diag;
use crate::provider::Shared;
use crate::schema::{Str, Strings, computed, known_strings, optional, required, string_list};

pub struct ClientBundleDataSource(pub Shared);

#[derive(Serialize, Deserialize)]
pub struct State {
    cluster: Str,
    kinds: Strings,
    ca_pem: Str,
    crl_pem: Str,
}

#[async_trait]
impl DataSource for ClientBundleDataSource {
    type State<'a> = State;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(Schema {
            version: 1,
            block: Block {
                description: Description::markdown(
                    "The client CA bundle and CRLs of a cluster, for the proxy in front of kube-apiserver.",
                ),
                attributes: map! {
                    "cluster" => required(AttributeType::String, "Cluster id or name."),
                    "kinds" => optional(string_list(),
                        "CA kinds whose clients to accept, in order; kca's default when unset \
                         (`operators`, `control-plane`, `kubelet`)."),
                    "ca_pem" => computed(AttributeType::String, "PEM bundle of those CAs (`client-ca.pem`)."),
                    "crl_pem" => computed(AttributeType::String, "Their CRLs, PEM (`client-crl.pem`)."),
                },
                ..Default::default()
            },
        })
    }

    async fn read<'a>(&self, diags: &mut Diagnostics, config: State, _meta: ValueEmpty) -> Option<State> {
        let client = self.0.client(diags)?;
        let Value::Value(cluster) = &config.cluster else {
            diag::error(diags, "kca_client_bundle: cluster must be set", "");
            return None;
        };
        let kinds = if config.kinds.is_null() { None } else { known_strings(&config.kinds) };
        let mut files = Vec::new();
        for file in ["client-ca.pem", "client-crl.pem"] {
            match client.client_bundle(cluster, file, kinds.as_deref()).await {
                Ok(text) => files.push(text),
                Err(e) => {
                    e.report(diags, &format!("Reading {file} of cluster {cluster}"));
                    return None;
                }
            }
        }
        let crl = files.pop().map(Value::Value).unwrap_or_default();
        let ca = files.pop().map(Value::Value).unwrap_or_default();
        Some(State { ca_pem: ca, crl_pem: crl, ..config })
    }
}
