//! `kca pki renew [NAME|all]`: re-issue the component certificates and kubeconfigs `kca pki
//! export` wrote, as `kubeadm certs renew` does: same profile, CN and SANs, same key (a CSR from
//! the key on disk), each file replaced atomically (written beside it, then renamed over it).

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::client::Client;
use super::output::{write_private_file, write_public_file};
use super::pki_export::{KUBECONFIGS, LAYOUT, common_name_of, with_extension};
use super::settings::ConnectionArgs;
use crate::pki::SigningKeyPair;
use crate::pki::kubeconfig::{ClusterEndpoint, UserCredential, render};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  kca pki renew prod --dir /etc/kubernetes\n  \
    kca pki renew prod apiserver --dir /etc/kubernetes\n  kca pki renew prod admin.conf --dir /etc/kubernetes")]
pub struct RenewArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Cluster name or id.
    pub cluster: String,
    /// A certificate (`apiserver`, `etcd-server`, ...) or kubeconfig (`admin.conf`, ...), or
    /// `all` (default): every one of them found in the directory.
    #[arg(default_value = "all")]
    pub name: String,
    /// Where `kca pki export` wrote them (e.g. /etc/kubernetes).
    #[arg(long)]
    pub dir: PathBuf,
}

#[derive(Deserialize)]
struct Issued {
    certificate_pem: String,
    serial: String,
    not_after: String,
}

/// What an existing certificate says: its CN, DNS names and IP addresses.
struct Existing {
    common_name: String,
    dns_names: Vec<String>,
    ip_addresses: Vec<IpAddr>,
}

fn read_certificate(pem_text: &str) -> anyhow::Result<Existing> {
    use der::Decode;
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;
    let block = pem::parse(pem_text).context("not a PEM certificate")?;
    let certificate =
        x509_cert::Certificate::from_der(block.contents()).context("not an X.509 certificate")?;
    let (mut dns_names, mut ip_addresses) = (Vec::new(), Vec::new());
    if let Some((_, san)) = certificate.tbs_certificate.get::<SubjectAltName>().context("reading its SANs")? {
        for name in san.0 {
            match name {
                GeneralName::DnsName(dns) => dns_names.push(dns.to_string()),
                GeneralName::IpAddress(octets) => match octets.as_bytes().len() {
                    4 => ip_addresses.push(IpAddr::from(<[u8; 4]>::try_from(octets.as_bytes())?)),
                    16 => ip_addresses.push(IpAddr::from(<[u8; 16]>::try_from(octets.as_bytes())?)),
                    _ => bail!("an IP address SAN of {} bytes", octets.as_bytes().len()),
                },
                _ => {}
            }
        }
    }
    Ok(Existing { common_name: common_name_of(pem_text)?, dns_names, ip_addresses })
}

/// The request that re-issues `profile` with the names `existing` carries: the names kca adds by
/// itself (loopback, the `kubernetes` service names and IP) are not asked for again, but the
/// cluster domain and service IP are kept.
fn renewal_request(profile: &str, existing: &Existing, csr: String) -> serde_json::Value {
    let mut body = serde_json::json!({"profile": profile, "csr_pem": csr});
    match profile {
        "etcd-server" | "etcd-peer" => {
            body["common_name"] = existing.common_name.clone().into();
            body["dns_names"] = existing.dns_names.iter().filter(|n| *n != "localhost").cloned().collect();
            body["ip_addresses"] = existing
                .ip_addresses
                .iter()
                .filter(|ip| !ip.is_loopback())
                .map(|ip| ip.to_string())
                .collect();
        }
        "apiserver" => {
            let mut dns_names = Vec::new();
            for name in &existing.dns_names {
                match name.strip_prefix("kubernetes.default.svc.") {
                    Some(domain) => body["cluster_domain"] = domain.into(),
                    None if matches!(
                        name.as_str(),
                        "kubernetes" | "kubernetes.default" | "kubernetes.default.svc"
                    ) => {}
                    None => dns_names.push(name.clone()),
                }
            }
            body["dns_names"] = dns_names.into();
            // kca, like kubeadm, writes the service IP first.
            let mut ips = existing.ip_addresses.iter().map(|ip| ip.to_string());
            if let Some(service_ip) = ips.next() {
                body["service_ip"] = service_ip.into();
            }
            body["ip_addresses"] = ips.collect();
        }
        "kubelet-client" => body["common_name"] = existing.common_name.clone().into(),
        _ => {}
    }
    body
}

/// A CSR for the key in `key_pem` (PKCS#8, or kubeadm's PKCS#1/SEC1).
fn csr_for(key_pem: &str) -> anyhow::Result<String> {
    let key = SigningKeyPair::from_private_key_pem(key_pem).context("reading the private key")?;
    Ok(rcgen::CertificateParams::default().serialize_request(&key)?.pem()?)
}

async fn reissue(
    client: &Client,
    args: &RenewArgs,
    profile: &str,
    existing: &Existing,
    key_pem: &str,
) -> anyhow::Result<Issued> {
    let body = renewal_request(profile, existing, csr_for(key_pem)?);
    client
        .post_json(&["v1", "clusters", &args.cluster, "certificates"], &body)
        .await
        .with_context(|| format!("re-issuing {profile}"))
}

pub async fn renew(args: RenewArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.connection.resolve()?)?;
    let all = args.name == "all";
    let known =
        LAYOUT.iter().any(|(p, _)| *p == args.name) || KUBECONFIGS.iter().any(|(f, _, _)| *f == args.name);
    if !all && !known {
        let names: Vec<&str> =
            LAYOUT.iter().map(|(p, _)| *p).chain(KUBECONFIGS.iter().map(|(f, _, _)| *f)).collect();
        bail!("no certificate {:?}; one of: all, {}", args.name, names.join(", "));
    }
    let mut renewed = 0;
    for (profile, base) in LAYOUT.iter().filter(|(p, _)| all || *p == args.name) {
        let base = args.dir.join(base);
        let (cert_path, key_path) = (with_extension(&base, "crt"), with_extension(&base, "key"));
        if !cert_path.exists() {
            if all {
                continue;
            }
            bail!("{} does not exist: kca pki export writes it", cert_path.display());
        }
        let existing = read_certificate(&std::fs::read_to_string(&cert_path)?)
            .with_context(|| format!("reading {}", cert_path.display()))?;
        let key_pem = zeroize::Zeroizing::new(
            std::fs::read_to_string(&key_path).with_context(|| format!("reading {}", key_path.display()))?,
        );
        let issued = reissue(&client, &args, profile, &existing, &key_pem).await?;
        write_public_file(&cert_path, issued.certificate_pem.as_bytes())?;
        eprintln!(
            "kca: renewed {} (serial {}, expires {})",
            cert_path.display(),
            issued.serial,
            issued.not_after
        );
        renewed += 1;
    }
    for (file, profile, _) in KUBECONFIGS.iter().filter(|(f, _, _)| all || *f == args.name) {
        let path = args.dir.join(file);
        if !path.exists() {
            if all {
                continue;
            }
            bail!("{} does not exist: kca pki export writes it", path.display());
        }
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(&path)?);
        let config: Kubeconfig =
            serde_norway::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        let (Some(cluster), Some(user)) = (config.clusters.first(), config.users.first()) else {
            bail!("{} has no cluster or user", path.display());
        };
        let decode =
            |data: &str| -> anyhow::Result<String> { Ok(String::from_utf8(STANDARD.decode(data)?)?) };
        let certificate = decode(&user.user.client_certificate_data)?;
        let key_pem = zeroize::Zeroizing::new(decode(&user.user.client_key_data)?);
        let ca_bundle = decode(&cluster.cluster.certificate_authority_data)?;
        let existing =
            read_certificate(&certificate).with_context(|| format!("reading {}", path.display()))?;
        let issued = reissue(&client, &args, profile, &existing, &key_pem).await?;
        let endpoint = ClusterEndpoint {
            name: &cluster.name,
            server: &cluster.cluster.server,
            ca_bundle_pem: &ca_bundle,
        };
        let credential =
            UserCredential::Certificate { certificate_pem: &issued.certificate_pem, key_pem: Some(&key_pem) };
        let document = zeroize::Zeroizing::new(render(&endpoint, &user.name, &credential));
        write_private_file(&path, document.as_bytes())?;
        eprintln!("kca: renewed {} (serial {}, expires {})", path.display(), issued.serial, issued.not_after);
        renewed += 1;
    }
    if renewed == 0 {
        bail!("nothing to renew in {}", args.dir.display());
    }
    Ok(())
}

#[derive(Deserialize)]
struct Kubeconfig {
    clusters: Vec<NamedCluster>,
    users: Vec<NamedUser>,
}

#[derive(Deserialize)]
struct NamedCluster {
    name: String,
    cluster: ClusterEntry,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterEntry {
    server: String,
    certificate_authority_data: String,
}

#[derive(Deserialize)]
struct NamedUser {
    name: String,
    user: UserEntry,
}

#[derive(Deserialize, zeroize::ZeroizeOnDrop)]
#[serde(rename_all = "kebab-case")]
struct UserEntry {
    #[zeroize(skip)]
    client_certificate_data: String,
    client_key_data: String,
}
