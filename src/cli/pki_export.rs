//! `kca pki export`: the public CA files and the component certificates an operator asks for,
//! written in kubeadm's layout (`pki/ca.crt`, `pki/front-proxy-ca.crt`, `pki/etcd/ca.crt`,
//! `pki/apiserver.crt`, ...) to bootstrap a control plane. Never a CA key: keys are generated here
//! for the components, and only their CSRs go to the server.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use super::client::Client;
use super::output::{write_private_file, write_public_file};
use super::settings::ConnectionArgs;
use crate::pki::{KeyAlgorithm, SigningKeyPair};

/// Component certificates kubeadm expects, by kca profile: (profile, path under the directory).
const LAYOUT: [(&str, &str); 7] = [
    ("apiserver", "pki/apiserver"),
    ("apiserver-kubelet-client", "pki/apiserver-kubelet-client"),
    ("front-proxy-client", "pki/front-proxy-client"),
    ("apiserver-etcd-client", "pki/apiserver-etcd-client"),
    ("etcd-server", "pki/etcd/server"),
    ("etcd-peer", "pki/etcd/peer"),
    ("etcd-healthcheck-client", "pki/etcd/healthcheck-client"),
];

/// The CA bundles kubeadm reads: (authority kind, file).
const CA_FILES: [(&str, &str); 3] =
    [("control-plane", "pki/ca.crt"), ("aggregation", "pki/front-proxy-ca.crt"), ("etcd", "pki/etcd/ca.crt")];

#[derive(Debug, clap::Args)]
pub struct PkiArgs {
    #[command(subcommand)]
    pub command: PkiCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PkiCommand {
    /// Write a control plane's certificates in kubeadm's layout.
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  \
    kca pki export prod --dir /etc/kubernetes --node-name cp-1 --dns-name cp-1.example.com --ip 10.0.0.10")]
pub struct ExportArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Cluster name or id.
    pub cluster: String,
    /// Where to write `pki/...` (e.g. /etc/kubernetes).
    #[arg(long)]
    pub dir: PathBuf,
    /// Component certificates to issue (default: all of kubeadm's control-plane certificates).
    #[arg(long = "cert", value_name = "PROFILE", value_parser = LAYOUT.map(|(p, _)| p))]
    pub certs: Vec<String>,
    /// The control-plane node's name: the CN of its etcd certificates and a SAN of apiserver/etcd.
    #[arg(long)]
    pub node_name: Option<String>,
    /// More DNS names for the apiserver and etcd serving certificates (repeatable).
    #[arg(long = "dns-name", value_name = "NAME")]
    pub dns_names: Vec<String>,
    /// IP addresses for the apiserver and etcd serving certificates (repeatable).
    #[arg(long = "ip", value_name = "IP")]
    pub ip_addresses: Vec<String>,
    /// The `kubernetes` service IP (apiserver; default 10.96.0.1).
    #[arg(long)]
    pub service_ip: Option<String>,
    /// The cluster DNS domain (apiserver; default cluster.local).
    #[arg(long)]
    pub cluster_domain: Option<String>,
    /// Replace files that exist.
    #[arg(long)]
    pub force: bool,
}

#[derive(Deserialize)]
struct Issued {
    certificate_pem: String,
    serial: String,
}

pub async fn run(args: PkiArgs) -> anyhow::Result<()> {
    match args.command {
        PkiCommand::Export(export) => export_pki(export).await,
    }
}

async fn export_pki(args: ExportArgs) -> anyhow::Result<()> {
    let settings = args.connection.resolve()?;
    let client = Client::new(&settings)?;
    let profiles: Vec<&str> = if args.certs.is_empty() {
        LAYOUT.iter().map(|(profile, _)| *profile).collect()
    } else {
        args.certs.iter().map(String::as_str).collect()
    };
    let mut planned: Vec<PathBuf> = CA_FILES.iter().map(|(_, file)| args.dir.join(file)).collect();
    for profile in &profiles {
        let base = base_path(profile);
        planned.push(args.dir.join(format!("{base}.crt")));
        planned.push(args.dir.join(format!("{base}.key")));
    }
    if !args.force
        && let Some(existing) = planned.iter().find(|p| p.exists())
    {
        bail!("{} exists; pass --force to replace the files", existing.display());
    }

    for (kind, file) in CA_FILES {
        let bundle =
            client.fetch(&["v1", "clusters", &args.cluster, "authorities", kind, "ca.pem"], None).await?;
        write_public_file(&args.dir.join(file), &bundle.body)?;
    }
    for profile in profiles {
        let issued = issue(&client, &args, profile).await?;
        let base = args.dir.join(base_path(profile));
        write_private_file(&with_extension(&base, "key"), issued.1.as_bytes())?;
        write_public_file(&with_extension(&base, "crt"), issued.0.certificate_pem.as_bytes())?;
        eprintln!("kca: wrote {}.crt (serial {})", base.display(), issued.0.serial);
    }
    Ok(())
}

fn base_path(profile: &str) -> &'static str {
    LAYOUT.iter().find(|(p, _)| *p == profile).map(|(_, path)| *path).expect("profiles are checked by clap")
}

fn with_extension(base: &Path, extension: &str) -> PathBuf {
    let mut path = base.as_os_str().to_owned();
    path.push(".");
    path.push(extension);
    PathBuf::from(path)
}

/// Issue one component certificate for a key made here.
async fn issue(
    client: &Client,
    args: &ExportArgs,
    profile: &str,
) -> anyhow::Result<(Issued, zeroize::Zeroizing<String>)> {
    let (key, pkcs8) = tokio::task::spawn_blocking(|| SigningKeyPair::generate(KeyAlgorithm::P256))
        .await
        .context("generating a key")??;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .context("making the CSR")?
        .pem()
        .context("making the CSR")?;
    let mut body = serde_json::json!({"profile": profile, "csr_pem": csr});
    let serving = matches!(profile, "apiserver" | "etcd-server" | "etcd-peer");
    if serving {
        let mut dns_names = args.dns_names.clone();
        if let Some(node) = &args.node_name {
            dns_names.insert(0, node.clone());
        }
        body["dns_names"] = dns_names.into();
        body["ip_addresses"] = args.ip_addresses.clone().into();
    }
    if matches!(profile, "etcd-server" | "etcd-peer")
        && let Some(node) = &args.node_name
    {
        body["common_name"] = node.clone().into();
    }
    if profile == "apiserver" {
        if let Some(ip) = &args.service_ip {
            body["service_ip"] = ip.clone().into();
        }
        if let Some(domain) = &args.cluster_domain {
            body["cluster_domain"] = domain.clone().into();
        }
    }
    let issued: Issued = client
        .post_json(&["v1", "clusters", &args.cluster, "certificates"], &body)
        .await
        .with_context(|| format!("issuing {profile}"))?;
    Ok((issued, crate::pki::keys::private_key_pem(&pkcs8)))
}
