//! `kca pki export`: the public CA files, the component certificates and the component
//! kubeconfigs an operator asks for, written in kubeadm's layout (`pki/ca.crt`,
//! `pki/front-proxy-ca.crt`, `pki/etcd/ca.crt`, `pki/apiserver.crt`, ..., `admin.conf`,
//! `super-admin.conf`, `controller-manager.conf`, `scheduler.conf`, `kubelet.conf`) to bootstrap
//! a control plane. Never a CA key: keys are generated here for the components, and only their
//! CSRs go to the server. Names default the way kubeadm's do: the node name is the host's name,
//! the advertise address the one of the default route.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use super::client::{Client, ClientError};
use super::output::{write_private_file, write_public_file};
use super::settings::ConnectionArgs;
use crate::pki::kubeconfig::{ClusterEndpoint, UserCredential, render};
use crate::pki::{KeyAlgorithm, SigningKeyPair};

/// Component certificates kubeadm expects, by kca profile: (profile, path under the directory).
pub(super) const LAYOUT: [(&str, &str); 7] = [
    ("apiserver", "pki/apiserver"),
    ("apiserver-kubelet-client", "pki/apiserver-kubelet-client"),
    ("front-proxy-client", "pki/front-proxy-client"),
    ("apiserver-etcd-client", "pki/apiserver-etcd-client"),
    ("etcd-server", "pki/etcd/server"),
    ("etcd-peer", "pki/etcd/peer"),
    ("etcd-healthcheck-client", "pki/etcd/healthcheck-client"),
];

/// The component kubeconfigs kubeadm writes: (file, profile, whether it talks to the local API
/// endpoint rather than the cluster's server).
pub(super) const KUBECONFIGS: [(&str, &str, bool); 5] = [
    ("admin.conf", "admin", false),
    ("super-admin.conf", "super-admin", false),
    ("controller-manager.conf", "controller-manager", true),
    ("scheduler.conf", "scheduler", true),
    ("kubelet.conf", "kubelet-client", false),
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
    /// Re-issue exported component certificates and kubeconfigs, keeping their names, SANs and
    /// keys; each file is replaced atomically.
    Renew(super::pki_renew::RenewArgs),
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  \
    kca pki export prod --dir /etc/kubernetes\n  \
    kca pki export prod --dir /etc/kubernetes --node-name cp-1 --dns-name cp-1.example.com --ip 10.0.0.10")]
pub struct ExportArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Cluster name or id.
    pub cluster: String,
    /// Where to write `pki/...` (e.g. /etc/kubernetes).
    #[arg(long)]
    pub dir: PathBuf,
    /// Component certificates to issue (default: all of kubeadm's control-plane certificates,
    /// kubeconfigs and the service-account key pair; with `--cert`, `--kubeconfig` or
    /// `--service-account`, only those named).
    #[arg(long = "cert", value_name = "PROFILE", value_parser = LAYOUT.map(|(p, _)| p))]
    pub certs: Vec<String>,
    /// Write the service-account key pair, `pki/sa.key` (the signing key: exported, audited) and
    /// `pki/sa.pub` (every key that verifies), also when `--cert`/`--kubeconfig` pick files. A
    /// cluster without a key gets one first.
    #[arg(long)]
    pub service_account: bool,
    /// Component kubeconfigs to write (see `--cert`).
    #[arg(long = "kubeconfig", value_name = "FILE", value_parser = KUBECONFIGS.map(|(f, _, _)| f))]
    pub kubeconfigs: Vec<String>,
    /// The control-plane node's name: the CN of its etcd certificates and of `kubelet.conf`
    /// (`system:node:<name>`), and a SAN of apiserver/etcd (default: this host's name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The address the API server advertises: a SAN of apiserver/etcd when no `--ip` is given,
    /// and the host of the local API endpoint (default: this host's address on its default route).
    #[arg(long, value_name = "IP")]
    pub advertise_address: Option<std::net::IpAddr>,
    /// The API server this host's controller-manager and scheduler talk to directly
    /// (default: `https://<advertise address>:6443`, kubeadm's local API endpoint).
    #[arg(long, value_name = "URL")]
    pub local_api_endpoint: Option<String>,
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

/// The CN of a PEM certificate: the user name kubeadm gives a component kubeconfig.
pub(super) fn common_name_of(certificate_pem: &str) -> anyhow::Result<String> {
    use der::Decode;
    let block = pem::parse(certificate_pem).context("the server answered no PEM certificate")?;
    let certificate =
        x509_cert::Certificate::from_der(block.contents()).context("reading the certificate")?;
    let cn = der::asn1::ObjectIdentifier::new_unwrap("2.5.4.3");
    certificate
        .tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == cn)
        .and_then(|atv| der::asn1::Utf8StringRef::try_from(&atv.value).ok().map(|s| s.as_str().to_string()))
        .context("the certificate has no CN")
}

pub async fn run(args: PkiArgs) -> anyhow::Result<()> {
    match args.command {
        PkiCommand::Export(export) => export_pki(export).await,
        PkiCommand::Renew(renew) => super::pki_renew::renew(renew).await,
    }
}

/// The names this export uses: given, or kubeadm's defaults read from this host.
struct Names {
    node_name: String,
    ip_addresses: Vec<String>,
    local_api_endpoint: Option<String>,
}

impl Names {
    fn resolve(args: &ExportArgs) -> anyhow::Result<Self> {
        let node_name = match &args.node_name {
            Some(name) => name.clone(),
            None => host_name().context("reading this host's name; pass --node-name")?,
        };
        let advertise = args.advertise_address.or_else(default_route_address);
        let ip_addresses = if args.ip_addresses.is_empty() {
            advertise.map(|ip| ip.to_string()).into_iter().collect()
        } else {
            args.ip_addresses.clone()
        };
        let local_api_endpoint = args.local_api_endpoint.clone().or_else(|| {
            advertise.map(|ip| match ip {
                std::net::IpAddr::V6(v6) => format!("https://[{v6}]:6443"),
                v4 => format!("https://{v4}:6443"),
            })
        });
        Ok(Self { node_name, ip_addresses, local_api_endpoint })
    }
}

/// The kernel's host name, what `hostname` prints, lower-cased as kubeadm does.
fn host_name() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")?.trim().to_ascii_lowercase();
    if name.is_empty() {
        bail!("the host has no name");
    }
    Ok(name)
}

/// The source address the kernel picks for the default route (no packet is sent), as kubeadm
/// picks its default advertise address.
fn default_route_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

async fn export_pki(args: ExportArgs) -> anyhow::Result<()> {
    let settings = args.connection.resolve()?;
    let client = Client::new(&settings)?;
    let names = Names::resolve(&args)?;
    let everything = args.certs.is_empty() && args.kubeconfigs.is_empty() && !args.service_account;
    let profiles: Vec<&str> = if everything {
        LAYOUT.iter().map(|(profile, _)| *profile).collect()
    } else {
        args.certs.iter().map(String::as_str).collect()
    };
    let kubeconfigs: Vec<(&str, &str, bool)> = KUBECONFIGS
        .into_iter()
        .filter(|(file, _, _)| everything || args.kubeconfigs.iter().any(|k| k == file))
        .collect();
    let mut planned: Vec<PathBuf> = CA_FILES.iter().map(|(_, file)| args.dir.join(file)).collect();
    for profile in &profiles {
        let base = base_path(profile);
        planned.push(args.dir.join(format!("{base}.crt")));
        planned.push(args.dir.join(format!("{base}.key")));
    }
    planned.extend(kubeconfigs.iter().map(|(file, _, _)| args.dir.join(file)));
    let service_account = everything || args.service_account;
    if service_account {
        planned.extend(SA_FILES.iter().map(|file| args.dir.join(file)));
    }
    if !args.force
        && let Some(existing) = planned.iter().find(|p| p.exists())
    {
        bail!("{} exists; pass --force to replace the files", existing.display());
    }

    let mut control_plane_bundle = String::new();
    for (kind, file) in CA_FILES {
        let bundle =
            client.fetch(&["v1", "clusters", &args.cluster, "authorities", kind, "ca.pem"], None).await?;
        if kind == "control-plane" {
            control_plane_bundle = String::from_utf8_lossy(&bundle.body).into_owned();
        }
        write_public_file(&args.dir.join(file), &bundle.body)?;
    }
    for profile in profiles {
        let (issued, key) = issue(&client, &args, &names, profile).await?;
        let base = args.dir.join(base_path(profile));
        write_private_file(&with_extension(&base, "key"), key.as_bytes())?;
        write_public_file(&with_extension(&base, "crt"), issued.certificate_pem.as_bytes())?;
        eprintln!("kca: wrote {}.crt (serial {})", base.display(), issued.serial);
    }
    if service_account {
        export_service_account(&client, &args).await?;
    }
    if !kubeconfigs.is_empty() {
        let cluster: ClusterInfo = client.get_json(&["v1", "clusters", &args.cluster]).await?;
        for (file, profile, local) in kubeconfigs {
            let server = match (local, &names.local_api_endpoint) {
                (true, Some(endpoint)) => endpoint.as_str(),
                _ => cluster.server.as_str(),
            };
            let (issued, key) = match issue(&client, &args, &names, profile).await {
                Ok(issued) => issued,
                // kubeadm writes super-admin.conf, but system:masters is the cluster policy's call.
                Err(err) if profile == "super-admin" && refused_for(&err, "allow_system_masters") => {
                    eprintln!(
                        "kca: skipped {file}: the cluster's policy does not allow system:masters (allow_system_masters)"
                    );
                    continue;
                }
                Err(err) => return Err(err),
            };
            let user = common_name_of(&issued.certificate_pem)?;
            let endpoint =
                ClusterEndpoint { name: &cluster.name, server, ca_bundle_pem: &control_plane_bundle };
            let credential =
                UserCredential::Certificate { certificate_pem: &issued.certificate_pem, key_pem: Some(&key) };
            let document = zeroize::Zeroizing::new(render(&endpoint, &user, &credential));
            write_private_file(&args.dir.join(file), document.as_bytes())?;
            eprintln!("kca: wrote {} (user {user}, serial {})", args.dir.join(file).display(), issued.serial);
        }
    }
    Ok(())
}

/// kubeadm's service-account key files.
const SA_FILES: [&str; 2] = ["pki/sa.key", "pki/sa.pub"];

#[derive(Deserialize, zeroize::ZeroizeOnDrop)]
struct SigningKey {
    #[zeroize(skip)]
    key_id: String,
    private_key_pem: String,
    #[zeroize(skip)]
    public_keys_pem: String,
}

/// Write `sa.key` (the signing key) and `sa.pub` (every key that verifies); a cluster without a
/// service-account key gets one first.
async fn export_service_account(client: &Client, args: &ExportArgs) -> anyhow::Result<()> {
    let path = ["v1", "clusters", &args.cluster, "service-account", "signing-key", "export"];
    let key: SigningKey = match client.post_json(&path, &serde_json::json!({})).await {
        Err(ClientError::Problem { status, .. }) if status == reqwest::StatusCode::NOT_FOUND => {
            let rotate = ["v1", "clusters", &args.cluster, "service-account", "keys", "rotate"];
            let _: serde_json::Value = client.post_json(&rotate, &serde_json::json!({})).await?;
            eprintln!("kca: the cluster had no service-account key: made one");
            client.post_json(&path, &serde_json::json!({})).await?
        }
        other => other?,
    };
    write_private_file(&args.dir.join(SA_FILES[0]), key.private_key_pem.as_bytes())?;
    write_public_file(&args.dir.join(SA_FILES[1]), key.public_keys_pem.as_bytes())?;
    eprintln!("kca: wrote {} (key id {})", args.dir.join(SA_FILES[0]).display(), key.key_id);
    Ok(())
}

/// Whether an error is the server refusing under policy `rule`.
fn refused_for(err: &anyhow::Error, rule: &str) -> bool {
    err.chain().any(|cause| {
        matches!(cause.downcast_ref::<ClientError>(),
            Some(ClientError::Problem { problem, .. }) if problem.rule.as_deref() == Some(rule))
    })
}

#[derive(Deserialize)]
struct ClusterInfo {
    name: String,
    server: String,
}

fn base_path(profile: &str) -> &'static str {
    LAYOUT.iter().find(|(p, _)| *p == profile).map(|(_, path)| *path).expect("profiles are checked by clap")
}

pub(super) fn with_extension(base: &Path, extension: &str) -> PathBuf {
    let mut path = base.as_os_str().to_owned();
    path.push(".");
    path.push(extension);
    PathBuf::from(path)
}

/// Issue one component certificate for a key made here; answers it and the key (PEM).
async fn issue(
    client: &Client,
    args: &ExportArgs,
    names: &Names,
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
        dns_names.insert(0, names.node_name.clone());
        body["dns_names"] = dns_names.into();
        body["ip_addresses"] = names.ip_addresses.clone().into();
    }
    if matches!(profile, "etcd-server" | "etcd-peer") {
        body["common_name"] = names.node_name.clone().into();
    }
    if profile == "kubelet-client" {
        body["common_name"] = format!("system:node:{}", names.node_name).into();
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
