//! terraform-provider-kca: a Terraform provider (plugin protocol 6) for kca, speaking only its
//! public HTTP API.

mod authority;
mod authority_rotation;
mod client;
mod client_bundle;
mod cluster;
mod cluster_endpoints;
mod component_certificate;
mod diag;
mod kubeconfig;
mod plugin_tls;
mod provider;
mod renewal;
mod schema;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // aws-lc-rs is the only rustls provider compiled in; the plugin's TLS (plugin_tls.rs) and the
    // kca client (client.rs) name it explicitly, and so does anything else through this default.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    plugin_tls::serve("kca", provider::KcaProvider::default()).await
}
