//! `kca kubeconfig` (a kubeconfig, an exec credential, or an exec-plugin kubeconfig) and
//! `kca authority-cert`.
//!
//! The key is generated here and only a CSR goes to the server, so the private key never crosses
//! the network; the server's kubeconfig (which then has no key) gets the key added locally.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::cache::{CachedCredential, CredentialCache, cache_key};
use super::client::Client;
use super::output::{write_private_file, write_public_file};
use super::settings::{ConnectionArgs, Settings};
use crate::config::parse_duration;
use crate::pki::kubeconfig::{ClusterEndpoint, ExecCredential, UserCredential, render};
use crate::pki::{KeyAlgorithm, SigningKeyPair};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    kca kubeconfig prod alice -g dev -t 8h -o ~/.kube/prod.yaml\n  \
    kca kubeconfig prod alice -g dev --exec -o ~/.kube/prod.yaml   # kubectl runs kca for credentials")]
pub struct KubeconfigArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Cluster name or id.
    pub cluster: String,
    /// The Kubernetes user: the certificate's CN.
    pub user: String,
    /// A Kubernetes group: one O of the certificate (repeatable).
    #[arg(short = 'g', long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Certificate lifetime, in seconds or like 15m, 8h, 7d; the cluster policy's default when absent.
    #[arg(short = 't', long, value_name = "TTL", value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Write to FILE (mode 0600, replaced atomically) instead of stdout.
    #[arg(short = 'o', long = "output-file", value_name = "FILE", conflicts_with = "exec_credential")]
    pub output_file: Option<PathBuf>,
    /// Print a client.authentication.k8s.io/v1 ExecCredential, from the local cache while fresh
    /// (this is what the --exec kubeconfig runs).
    #[arg(short = 'x', long, conflicts_with = "exec")]
    pub exec_credential: bool,
    /// Make a kubeconfig whose user runs this kca binary for short-lived credentials (no token or
    /// key in the file).
    #[arg(long)]
    pub exec: bool,
    /// With --exec: the kube-apiserver URL to write, instead of reading it from the cluster (which
    /// needs the `read` scope).
    #[arg(long, requires = "exec", value_name = "URL")]
    pub server: Option<String>,
    /// Algorithm of the key generated here: p256 (default), p384 or ed25519.
    #[arg(long, value_name = "ALGORITHM", value_parser = parse_key_algorithm)]
    pub key_algorithm: Option<KeyAlgorithm>,
}

fn parse_key_algorithm(text: &str) -> Result<KeyAlgorithm, String> {
    KeyAlgorithm::GENERATED
        .into_iter()
        .find(|alg| alg.as_str() == text)
        .ok_or_else(|| format!("{text:?}: use p256, p384 or ed25519"))
}

#[derive(Debug, clap::Args)]
pub struct AuthorityCertArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Cluster name or id.
    pub cluster: String,
    /// etcd, control-plane, operators, kubelet or aggregation.
    pub kind: String,
    /// Write to FILE instead of stdout.
    #[arg(short = 'o', long = "output-file", value_name = "FILE")]
    pub output_file: Option<PathBuf>,
}

/// The JSON answer of `POST /v1/clusters/{c}/kubeconfigs`, the parts used here.
#[derive(Debug, Deserialize)]
struct Issued {
    kubeconfig: String,
    certificate_pem: String,
    serial: String,
    #[serde(with = "time::serde::rfc3339")]
    not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    not_after: OffsetDateTime,
}

/// A certificate issued for a key made here.
struct Credential {
    issued: Issued,
    key_pem: Zeroizing<String>,
}

async fn issue(client: &Client, args: &KubeconfigArgs) -> anyhow::Result<Credential> {
    let algorithm = args.key_algorithm.unwrap_or_default();
    let user = args.user.clone();
    let (csr_pem, key_pem) = tokio::task::spawn_blocking(move || new_key_and_csr(algorithm, &user))
        .await
        .context("generating the key")??;
    let mut body = serde_json::json!({"user": args.user, "groups": args.groups, "csr_pem": csr_pem});
    if let Some(ttl) = args.ttl {
        body["ttl_seconds"] = ttl.as_secs().into();
    }
    let issued: Issued = client.post_json(&["v1", "clusters", &args.cluster, "kubeconfigs"], &body).await?;
    Ok(Credential { issued, key_pem })
}

/// A fresh key and a CSR for it (its subject is ignored by the server; the request decides).
fn new_key_and_csr(algorithm: KeyAlgorithm, user: &str) -> anyhow::Result<(String, Zeroizing<String>)> {
    let (key, pkcs8) = SigningKeyPair::generate(algorithm)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, user);
    let csr = params.serialize_request(&key).context("making the CSR")?.pem().context("making the CSR")?;
    Ok((csr, crate::pki::keys::private_key_pem(&pkcs8)))
}

/// The server's kubeconfig (issued from a CSR, so without a key) with the local key added.
fn with_client_key(kubeconfig: &str, key_pem: &str) -> anyhow::Result<Zeroizing<String>> {
    let mut document: serde_norway::Value =
        serde_norway::from_str(kubeconfig).context("the server's kubeconfig is not YAML")?;
    let user = document
        .get_mut("users")
        .and_then(|users| users.get_mut(0))
        .and_then(|user| user.get_mut("user"))
        .and_then(serde_norway::Value::as_mapping_mut)
        .context("the server's kubeconfig has no user")?;
    user.insert("client-key-data".into(), STANDARD.encode(key_pem).into());
    Ok(Zeroizing::new(serde_norway::to_string(&document)?))
}

pub async fn run(args: KubeconfigArgs) -> anyhow::Result<()> {
    let settings = args.connection.resolve()?;
    let client = Client::new(&settings)?;
    if args.exec_credential {
        return exec_credential(&settings, &client, &args).await;
    }
    if args.exec {
        return exec_kubeconfig(&settings, &client, &args).await;
    }
    let credential = issue(&client, &args).await?;
    let kubeconfig = with_client_key(&credential.issued.kubeconfig, &credential.key_pem)?;
    match &args.output_file {
        Some(path) => {
            write_private_file(path, kubeconfig.as_bytes())?;
            eprintln!(
                "kca: wrote {} for {}: certificate {}, valid until {}",
                path.display(),
                args.user,
                credential.issued.serial,
                rfc3339(credential.issued.not_after)
            );
        }
        None => print!("{}", kubeconfig.as_str()),
    }
    Ok(())
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).expect("a UTC time always formats")
}

async fn exec_credential(settings: &Settings, client: &Client, args: &KubeconfigArgs) -> anyhow::Result<()> {
    let cache = CredentialCache::open(&super::cache::default_dir()?)?;
    let key = cache_key(settings.url.as_str(), &args.cluster, &args.user, &args.groups);
    let cached = match cache.load(&key, OffsetDateTime::now_utc()) {
        Some(cached) => cached,
        None => {
            let Credential { issued, key_pem } = issue(client, args).await?;
            let cached = CachedCredential {
                not_before: issued.not_before,
                not_after: issued.not_after,
                credential: ExecCredential::new(&issued.certificate_pem, &key_pem, rfc3339(issued.not_after)),
            };
            cache.store(&key, &cached)?;
            cached
        }
    };
    println!("{}", serde_json::to_string(&cached.credential)?);
    Ok(())
}

#[derive(Debug, Deserialize)]
struct ClusterView {
    name: String,
    server: String,
}

async fn exec_kubeconfig(settings: &Settings, client: &Client, args: &KubeconfigArgs) -> anyhow::Result<()> {
    let cluster = match &args.server {
        Some(server) => ClusterView { name: args.cluster.clone(), server: server.clone() },
        None => client.get_json(&["v1", "clusters", &args.cluster]).await.map_err(|err| {
            let hint = if err.status().is_some_and(|s| s == reqwest::StatusCode::FORBIDDEN) {
                " (reading the cluster's server URL needs the read scope; pass --server URL instead)"
            } else {
                ""
            };
            anyhow::Error::new(err).context(format!("reading cluster {:?}{hint}", args.cluster))
        })?,
    };
    let bundle = client
        .fetch(&["v1", "clusters", &args.cluster, "authorities", "control-plane", "ca.pem"], None)
        .await
        .context("reading the control-plane CA bundle")?;
    let ca_bundle_pem = String::from_utf8(bundle.body).context("the CA bundle is not text")?;
    let command = std::env::current_exe().context("locating the kca binary")?;
    let command = command.to_str().context("the kca binary's path is not UTF-8")?;
    let install_hint = format!(
        "This kubeconfig runs kca ({command}) to get a short-lived client certificate. Install kca \
         there, or run `kca kubeconfig {} {} --exec` again, and set KCA_TOKEN.",
        args.cluster, args.user
    );
    let kubeconfig = render(
        &ClusterEndpoint { name: &cluster.name, server: &cluster.server, ca_bundle_pem: &ca_bundle_pem },
        &args.user,
        &UserCredential::Exec { command, args: plugin_args(settings, args), install_hint: &install_hint },
    );
    match &args.output_file {
        Some(path) => {
            write_private_file(path, kubeconfig.as_bytes())?;
            eprintln!("kca: wrote {} ({}@{}, exec plugin)", path.display(), args.user, cluster.name);
        }
        None => print!("{kubeconfig}"),
    }
    Ok(())
}

/// The arguments kubectl runs kca with: the same request, the same server and trust; never the
/// token, which the plugin reads from KCA_TOKEN or the config file at run time.
fn plugin_args(settings: &Settings, args: &KubeconfigArgs) -> Vec<String> {
    let mut out: Vec<String> =
        vec!["kubeconfig".into(), args.cluster.clone(), args.user.clone(), "--exec-credential".into()];
    for group in &args.groups {
        out.extend(["-g".into(), group.clone()]);
    }
    if let Some(ttl) = args.ttl {
        out.extend(["--ttl".into(), ttl.as_secs().to_string()]);
    }
    if let Some(algorithm) = args.key_algorithm {
        out.extend(["--key-algorithm".into(), algorithm.to_string()]);
    }
    out.extend(["--url".into(), settings.url.as_str().trim_end_matches('/').to_string()]);
    if let Some(cacert) = &settings.cacert {
        out.extend(["--cacert".into(), cacert.display().to_string()]);
    }
    if let Some(config) = &settings.explicit_config {
        out.extend(["--config".into(), config.display().to_string()]);
    }
    out
}

pub async fn authority_cert(args: AuthorityCertArgs) -> anyhow::Result<()> {
    let settings = args.connection.resolve()?;
    let client = Client::new(&settings)?;
    let bundle =
        client.fetch(&["v1", "clusters", &args.cluster, "authorities", &args.kind, "ca.pem"], None).await?;
    match &args.output_file {
        Some(path) => write_public_file(path, &bundle.body)?,
        None => {
            use std::io::Write;
            std::io::stdout().lock().write_all(&bundle.body)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_key_is_added_to_the_servers_kubeconfig() {
        let server_side = render(
            &ClusterEndpoint { name: "prod", server: "https://k:6443", ca_bundle_pem: "CA" },
            "alice",
            &UserCredential::Certificate { certificate_pem: "CERT", key_pem: None },
        );
        let full = with_client_key(&server_side, "KEY").unwrap();
        let parsed: serde_norway::Value = serde_norway::from_str(&full).unwrap();
        let user = &parsed["users"][0]["user"];
        assert_eq!(user["client-certificate-data"], STANDARD.encode("CERT"));
        assert_eq!(user["client-key-data"], STANDARD.encode("KEY"));
        assert_eq!(parsed["current-context"], "alice@prod");
    }

    #[test]
    fn the_plugin_arguments_carry_no_token() {
        let settings = Settings {
            url: url::Url::parse("https://kca.example.com:8443").unwrap(),
            cacert: Some("/etc/kca/ca.pem".into()),
            token: super::super::settings::Token::new("secret-token"),
            explicit_config: None,
        };
        let args = KubeconfigArgs {
            connection: ConnectionArgs::default(),
            cluster: "prod".into(),
            user: "alice".into(),
            groups: vec!["dev".into(), "ops".into()],
            ttl: Some(Duration::from_secs(3600)),
            output_file: None,
            exec_credential: false,
            exec: true,
            server: None,
            key_algorithm: None,
        };
        let out = plugin_args(&settings, &args);
        assert_eq!(
            out,
            [
                "kubeconfig",
                "prod",
                "alice",
                "--exec-credential",
                "-g",
                "dev",
                "-g",
                "ops",
                "--ttl",
                "3600",
                "--url",
                "https://kca.example.com:8443",
                "--cacert",
                "/etc/kca/ca.pem"
            ]
        );
        assert!(!out.iter().any(|a| a.contains("secret")));
    }
}
