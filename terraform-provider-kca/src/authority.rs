//! Data source `kca_authority`: one CA's PEM bundle and where its CRL is published.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeType, Block, Description, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{DataSource, Diagnostics, map};

use crate::diag;
use crate::provider::Shared;
use crate::schema::{Str, computed, required};

pub struct AuthorityDataSource(pub Shared);

#[derive(Serialize, Deserialize)]
pub struct State {
    cluster: Str,
    kind: Str,
    bundle_pem: Str,
    crl_url: Str,
}

#[async_trait]
impl DataSource for AuthorityDataSource {
    type State<'a> = State;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(Schema {
            version: 1,
            block: Block {
                description: Description::markdown("One CA of a cluster: its PEM bundle and its CRL's URL."),
                attributes: map! {
                    "cluster" => required(AttributeType::String, "Cluster id or name."),
                    "kind" => required(AttributeType::String,
                        "`etcd`, `control-plane`, `operators`, `kubelet` or `aggregation`."),
                    "bundle_pem" => computed(AttributeType::String,
                        "Every live generation of the CA, PEM, soonest-expiring first (`…/ca.pem`)."),
                    "crl_url" => computed(AttributeType::String, "URL of the CA's DER CRL (`…/crl`)."),
                },
                ..Default::default()
            },
        })
    }

    async fn read<'a>(&self, diags: &mut Diagnostics, config: State, _meta: ValueEmpty) -> Option<State> {
        let client = self.0.client(diags)?;
        let (Value::Value(cluster), Value::Value(kind)) = (&config.cluster, &config.kind) else {
            diag::error(diags, "kca_authority: cluster and kind must be set", "");
            return None;
        };
        let bundle = match client.ca_bundle(cluster, kind).await {
            Ok(bundle) => bundle,
            Err(e) => {
                e.report(diags, &format!("Reading the {kind} CA of cluster {cluster}"));
                return None;
            }
        };
        let crl_url = client.url(&["v1", "clusters", cluster, "authorities", kind, "crl"]).to_string();
        Some(State { bundle_pem: Value::Value(bundle), crl_url: Value::Value(crl_url), ..config })
    }
}
