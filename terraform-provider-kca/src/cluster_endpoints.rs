//! Data source `kca_cluster_endpoints`: where kca publishes a cluster's trust material: each
//! CA's bundle and CRL, the client CA bundle, the client CRLs and HAProxy's `revoked.map`.
//! Everything listed is a public endpoint, for proxies and nodes to fetch without a token.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeType, Block, Description, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{DataSource, Diagnostics, map};

use crate::client::Client;
use crate::diag;
use crate::provider::Shared;
use crate::schema::{Str, Strings, computed, known_strings, optional, required, string_list, string_map};

pub struct ClusterEndpointsDataSource(pub Shared);

type UrlMap = Value<BTreeMap<String, String>>;

#[derive(Serialize, Deserialize)]
pub struct State {
    cluster: Str,
    kinds: Strings,
    ca_pem_urls: UrlMap,
    crl_urls: UrlMap,
    crl_pem_urls: UrlMap,
    client_ca_url: Str,
    client_crl_url: Str,
    revoked_map_url: Str,
}

/// `…/v1/clusters/<cluster>/<file>`, with `?kinds=` when given.
fn cluster_file(client: &Client, cluster: &str, file: &str, kinds: Option<&[String]>) -> String {
    let mut url = client.url(&["v1", "clusters", cluster, file]);
    if let Some(kinds) = kinds {
        url.query_pairs_mut().append_pair("kinds", &kinds.join(","));
    }
    url.to_string()
}

#[async_trait]
impl DataSource for ClusterEndpointsDataSource {
    type State<'a> = State;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(Schema {
            version: 1,
            block: Block {
                description: Description::markdown(
                    "The URLs where kca publishes a cluster's CA bundles, CRLs, client CA bundle, client \
                     CRLs and revoked-serial map (all public: no token needed to fetch them).",
                ),
                attributes: map! {
                    "cluster" => required(AttributeType::String,
                        "Cluster id or name; the URLs carry it as given."),
                    "kinds" => optional(string_list(),
                        "CA kinds for the client URLs (`client_ca_url`, `client_crl_url`, `revoked_map_url`), \
                         as `?kinds=`; kca's default when unset (`operators`, `control-plane`, `kubelet`)."),
                    "ca_pem_urls" => computed(string_map(), "CA kind → URL of its PEM bundle (`…/ca.pem`)."),
                    "crl_urls" => computed(string_map(), "CA kind → URL of its DER CRL (`…/crl`)."),
                    "crl_pem_urls" => computed(string_map(), "CA kind → URL of its PEM CRL (`…/crl.pem`)."),
                    "client_ca_url" => computed(AttributeType::String, "URL of the client CA bundle (`client-ca.pem`)."),
                    "client_crl_url" => computed(AttributeType::String, "URL of the client CRLs, PEM (`client-crl.pem`)."),
                    "revoked_map_url" => computed(AttributeType::String,
                        "URL of the HAProxy map of revoked serials (`revoked.map`)."),
                },
                ..Default::default()
            },
        })
    }

    /// The kinds come from kca (`GET …/authorities`, public), which also checks that the cluster
    /// exists: a URL is listed only for something kca serves.
    async fn read<'a>(&self, diags: &mut Diagnostics, config: State, _meta: ValueEmpty) -> Option<State> {
        let client = self.0.client(diags)?;
        let Value::Value(cluster) = &config.cluster else {
            diag::error(diags, "kca_cluster_endpoints: cluster must be set", "");
            return None;
        };
        let kinds = if config.kinds.is_null() { None } else { known_strings(&config.kinds) };
        let authorities = match client.list_authorities(cluster).await {
            Ok(authorities) => authorities,
            Err(e) => {
                e.report(diags, &format!("Reading the CAs of cluster {cluster}"));
                return None;
            }
        };
        let per_kind = |file: &str| -> UrlMap {
            Value::Value(
                authorities
                    .iter()
                    .map(|a| {
                        let url = client.url(&["v1", "clusters", cluster, "authorities", &a.kind, file]);
                        (a.kind.clone(), url.to_string())
                    })
                    .collect(),
            )
        };
        Some(State {
            ca_pem_urls: per_kind("ca.pem"),
            crl_urls: per_kind("crl"),
            crl_pem_urls: per_kind("crl.pem"),
            client_ca_url: Value::Value(cluster_file(client, cluster, "client-ca.pem", kinds.as_deref())),
            client_crl_url: Value::Value(cluster_file(client, cluster, "client-crl.pem", kinds.as_deref())),
            revoked_map_url: Value::Value(cluster_file(client, cluster, "revoked.map", kinds.as_deref())),
            ..config
        })
    }
}
