//! `kca certificates issue CLUSTER PROFILE`: one component certificate (kubeadm's table: apiserver,
//! etcd-peer, kubelet, ...). The key is generated here and only a CSR goes to the server; the
//! certificate and key are written to files, mode 0600, atomically.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use super::client::Client;
use super::output::{Format, FormatArg, cell, print_json, render_fields, write_private_file};
use crate::config::parse_duration;
use crate::pki::{KeyAlgorithm, SigningKeyPair};

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  \
    kca certificates issue prod etcd-peer --cn etcd-1 --dns-name etcd-1.example.com --ip 10.0.0.11 --dir ./pki\n  \
    kca certificates issue prod kubelet --cn system:node:worker-1 --dns-name worker-1 --file ./worker-1")]
pub struct IssueArgs {
    /// Cluster name or id.
    pub cluster: String,
    /// A component profile (GET /v1/profiles), e.g. apiserver, etcd-peer, front-proxy-client.
    pub profile: String,
    /// The CN, where the profile lets the request choose it (e.g. the etcd member's name, or
    /// system:node:NAME for kubelet profiles).
    #[arg(long = "cn", value_name = "NAME")]
    pub common_name: Option<String>,
    /// A DNS name for a serving certificate (repeatable).
    #[arg(long = "dns-name", value_name = "NAME")]
    pub dns_names: Vec<String>,
    /// An IP address for a serving certificate (repeatable).
    #[arg(long = "ip", value_name = "IP")]
    pub ip_addresses: Vec<String>,
    /// Lifetime, e.g. 90d; the profile's default when absent.
    #[arg(short = 't', long, value_name = "TTL", value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// apiserver only: the `kubernetes` service IP (default 10.96.0.1).
    #[arg(long, value_name = "IP")]
    pub service_ip: Option<String>,
    /// apiserver only: the cluster DNS domain (default cluster.local).
    #[arg(long, value_name = "DOMAIN")]
    pub cluster_domain: Option<String>,
    /// Algorithm of the key generated here: p256 (default), p384 or ed25519.
    #[arg(long, value_name = "ALGORITHM", value_parser = super::kubeconfig::parse_key_algorithm)]
    pub key_algorithm: Option<KeyAlgorithm>,
    /// Write BASE.crt and BASE.key.
    #[arg(long = "file", value_name = "BASE", required_unless_present = "dir", conflicts_with = "dir")]
    pub file: Option<PathBuf>,
    /// Write DIR/PROFILE.crt and DIR/PROFILE.key.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Replace files that exist.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub format: FormatArg,
}

impl IssueArgs {
    /// The certificate and key paths.
    fn paths(&self) -> (PathBuf, PathBuf) {
        let base = match (&self.file, &self.dir) {
            (Some(base), _) => base.clone(),
            (None, Some(dir)) => dir.join(&self.profile),
            (None, None) => unreachable!("clap requires --file or --dir"),
        };
        (with_extension(&base, "crt"), with_extension(&base, "key"))
    }

    fn body(&self, csr_pem: String) -> Value {
        let mut body = serde_json::json!({"profile": self.profile, "csr_pem": csr_pem});
        if let Some(cn) = &self.common_name {
            body["common_name"] = cn.clone().into();
        }
        if !self.dns_names.is_empty() {
            body["dns_names"] = self.dns_names.clone().into();
        }
        if !self.ip_addresses.is_empty() {
            body["ip_addresses"] = self.ip_addresses.clone().into();
        }
        if let Some(ttl) = self.ttl {
            body["ttl_seconds"] = ttl.as_secs().into();
        }
        if let Some(ip) = &self.service_ip {
            body["service_ip"] = ip.clone().into();
        }
        if let Some(domain) = &self.cluster_domain {
            body["cluster_domain"] = domain.clone().into();
        }
        body
    }
}

fn with_extension(base: &Path, extension: &str) -> PathBuf {
    let mut path = base.as_os_str().to_owned();
    path.push(".");
    path.push(extension);
    PathBuf::from(path)
}

pub async fn issue(client: &Client, args: &IssueArgs) -> anyhow::Result<()> {
    let (cert_path, key_path) = args.paths();
    if !args.force
        && let Some(existing) = [&cert_path, &key_path].into_iter().find(|p| p.exists())
    {
        bail!("{} exists; pass --force to replace it", existing.display());
    }
    let algorithm = args.key_algorithm.unwrap_or_default();
    let (csr_pem, key_pem) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let (key, pkcs8) = SigningKeyPair::generate(algorithm)?;
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .context("making the CSR")?
            .pem()
            .context("making the CSR")?;
        Ok((csr, crate::pki::keys::private_key_pem(&pkcs8)))
    })
    .await
    .context("generating the key")??;
    let issued: Value = client
        .post_json(&["v1", "clusters", &args.cluster, "certificates"], &args.body(csr_pem))
        .await
        .with_context(|| format!("issuing a {} certificate", args.profile))?;
    let certificate = issued["certificate_pem"].as_str().context("the answer has no certificate_pem")?;
    // The key first: a certificate file never names a key that is not there.
    write_private_file(&key_path, key_pem.as_bytes())?;
    write_private_file(&cert_path, certificate.as_bytes())?;
    eprintln!(
        "kca: wrote {} and {} ({}, serial {})",
        cert_path.display(),
        key_path.display(),
        args.profile,
        cell(&issued["serial"])
    );
    match args.format.format {
        Format::Json => print_json(&issued),
        Format::Text => {
            print!(
                "{}",
                render_fields(&[
                    ("serial", cell(&issued["serial"])),
                    ("profile", cell(&issued["profile"])),
                    ("not before", cell(&issued["not_before"])),
                    ("not after", cell(&issued["not_after"])),
                    ("fingerprint", cell(&issued["fingerprint_sha256"])),
                    ("certificate", cert_path.display().to_string()),
                    ("key", key_path.display().to_string()),
                ])
            );
            Ok(())
        }
    }
}
