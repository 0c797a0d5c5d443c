//! terraform-provider-kca: a Terraform provider (plugin protocol 6) for kca, speaking only its
//! public HTTP API.

mod authority;
mod client;
mod client_bundle;
mod cluster;
mod diag;
mod kubeconfig;
mod provider;
mod schema;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The plugin framework (tf-provider, through tonic) builds its gRPC TLS server on the process
    // default rustls provider, and both ring and aws-lc-rs are compiled in, so one must be named.
    // It must be ring: Terraform's client certificate is a self-signed CA certificate with a
    // P-521 key. Under aws-lc-rs, which verifies P-521, Terraform presents it and rustls-webpki
    // refuses it (a CA certificate used as an end entity), failing every handshake; under ring it
    // is not presented, and tf-provider accepts the connection without a client certificate. The
    // kca API client names aws-lc-rs itself (client.rs).
    let _ = rustls::crypto::ring::default_provider().install_default();
    tf_provider::serve("kca", provider::KcaProvider::default()).await
}
