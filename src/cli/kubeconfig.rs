//! `kca kubeconfig` (a kubeconfig, an exec credential, or an exec-plugin kubeconfig) and
//! `kca authority-cert`.
//!
//! The key is generated here and only a CSR goes to the server, so the private key never crosses
//! the network; the server's kubeconfig (which then has no key) gets the key added locally.

use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::cache::{CachedCredential, CredentialCache, RevokedList, cache_key, revoked_list_key, serial_of};
use super::client::Client;
use super::output::{DocumentOutput, print_json, write_private_file, write_public_file};
use super::settings::{ConnectionArgs, Settings};
use crate::config::parse_duration;
use crate::pki::kubeconfig::{ClusterEndpoint, ExecCredential, UserCredential, render};
use crate::pki::{KeyAlgorithm, SigningKeyPair};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    kca kubeconfig prod alice -g dev -t 8h --file ~/.kube/prod.yaml\n  \
    kca kubeconfig prod alice -g dev -n prod-dev --file ~/.kube/prod-dev.yaml   # context prod-dev\n  \
    kca kubeconfig prod alice -g dev --exec --file ~/.kube/prod.yaml   # kubectl runs kca for credentials")]
pub struct KubeconfigArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Cluster name or id.
    pub cluster: String,
    /// The Kubernetes user: the certificate's CN. Leave it out when signed in with `kca login`:
    /// the certificate is then yours (your identity provider's name for you).
    pub user: Option<String>,
    /// A Kubernetes group: one O of the certificate (repeatable).
    #[arg(short = 'g', long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Certificate lifetime, in seconds or like 15m, 8h, 7d; the cluster policy's default when absent.
    #[arg(short = 't', long, value_name = "TTL", value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// `-o yaml` (default) or `-o json`; `--file FILE` writes FILE (mode 0600, replaced
    /// atomically) instead of stdout.
    #[command(flatten)]
    pub output: DocumentOutput,
    /// The name of the cluster and of the context in the file (default: the cluster's name for
    /// the cluster, USER@CLUSTER for the context).
    #[arg(short = 'n', long, value_name = "NAME", conflicts_with = "exec_credential")]
    pub name: Option<String>,
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

pub(super) fn parse_key_algorithm(text: &str) -> Result<KeyAlgorithm, String> {
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
    /// `-o pem` (default: the bundle) or `-o json` (the authority and its generations); `--file
    /// FILE` writes FILE instead of stdout.
    #[command(flatten)]
    pub output: DocumentOutput,
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
    let user = args.user.clone().unwrap_or_else(|| "kca-user".into());
    let (csr_pem, key_pem) = tokio::task::spawn_blocking(move || new_key_and_csr(algorithm, &user))
        .await
        .context("generating the key")??;
    let mut body = serde_json::json!({"groups": args.groups, "csr_pem": csr_pem});
    if let Some(user) = &args.user {
        body["user"] = user.clone().into();
    }
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
    let mut settings = args.connection.resolve()?;
    super::login::refresh_if_due(&mut settings).await;
    let client = Client::new(&settings)?;
    if args.exec_credential {
        if args.output.output.is_some() || args.output.file.is_some() || args.output.output_file.is_some() {
            anyhow::bail!("--exec-credential prints an ExecCredential on stdout: it takes no -o or --file");
        }
        return exec_credential(&settings, &client, &args).await;
    }
    if args.exec {
        return exec_kubeconfig(&settings, &client, &args).await;
    }
    let (format, file) = args.output.resolve(&KUBECONFIG_FORMATS)?;
    let credential = issue(&client, &args).await?;
    let kubeconfig = with_client_key(&credential.issued.kubeconfig, &credential.key_pem)?;
    let kubeconfig = finish(&kubeconfig, args.name.as_deref(), format)?;
    match &file {
        Some(path) => {
            write_private_file(path, kubeconfig.as_bytes())?;
            eprintln!(
                "kca: wrote {} for {}: certificate {}, valid until {}",
                path.display(),
                args.user.as_deref().unwrap_or("you"),
                credential.issued.serial,
                rfc3339(credential.issued.not_after)
            );
        }
        None => print!("{}", kubeconfig.as_str()),
    }
    Ok(())
}

/// The formats of `kca kubeconfig -o`.
const KUBECONFIG_FORMATS: [&str; 2] = ["yaml", "json"];

/// The kubeconfig as written: renamed when `-n` was given (cluster and context), in `format`.
fn finish(kubeconfig: &str, name: Option<&str>, format: &str) -> anyhow::Result<Zeroizing<String>> {
    if name.is_none() && format == "yaml" {
        return Ok(Zeroizing::new(kubeconfig.to_string()));
    }
    let mut document: serde_norway::Value =
        serde_norway::from_str(kubeconfig).context("the kubeconfig is not YAML")?;
    if let Some(name) = name {
        rename(&mut document, name).context("renaming the kubeconfig's cluster and context")?;
    }
    Ok(Zeroizing::new(match format {
        "json" => {
            let json: serde_json::Value = serde_norway::from_value(document)?;
            format!("{}\n", serde_json::to_string_pretty(&json)?)
        }
        _ => serde_norway::to_string(&document)?,
    }))
}

/// Name the (only) cluster and context of a kubeconfig `name`, and make it the current context.
fn rename(document: &mut serde_norway::Value, name: &str) -> anyhow::Result<()> {
    let cluster = document
        .get_mut("clusters")
        .and_then(|l| l.get_mut(0))
        .and_then(serde_norway::Value::as_mapping_mut)
        .context("no cluster")?;
    cluster.insert("name".into(), name.into());
    let context = document
        .get_mut("contexts")
        .and_then(|l| l.get_mut(0))
        .and_then(serde_norway::Value::as_mapping_mut)
        .context("no context")?;
    context.insert("name".into(), name.into());
    context
        .get_mut("context")
        .and_then(serde_norway::Value::as_mapping_mut)
        .context("no context")?
        .insert("cluster".into(), name.into());
    document.as_mapping_mut().context("not a mapping")?.insert("current-context".into(), name.into());
    Ok(())
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).expect("a UTC time always formats")
}

async fn exec_credential(settings: &Settings, client: &Client, args: &KubeconfigArgs) -> anyhow::Result<()> {
    let cache = CredentialCache::open(&super::cache::default_dir()?)?;
    // A signed-in person's certificate is cached per session subject.
    let user = args.user.clone().unwrap_or_else(|| format!("session:{}", session_subject(settings)));
    let key = cache_key(settings.url.as_str(), &args.cluster, &user, &args.groups);
    let now = OffsetDateTime::now_utc();
    let mut revoked_serial = None;
    let cached = match cache.load(&key, now) {
        Some(cached) => match serial_of(&cached.credential.status.client_certificate_data) {
            Some(serial) if is_revoked(client, &cache, settings, &args.cluster, &serial, now).await => {
                cache.remove(&key);
                revoked_serial = Some(serial);
                None
            }
            _ => Some(cached),
        },
        None => None,
    };
    let cached = match cached {
        Some(cached) => cached,
        None => {
            let issued = issue(client, args).await;
            let Credential { issued, key_pem } = match (issued, &revoked_serial) {
                (Ok(issued), _) => issued,
                (Err(err), Some(serial)) => {
                    return Err(err.context(format!(
                        "the cached certificate {serial} was revoked, and a new one was refused"
                    )));
                }
                (Err(err), None) => return Err(err),
            };
            if let Some(serial) = &revoked_serial {
                eprintln!("kca: the cached certificate {serial} was revoked: issued {}", issued.serial);
            }
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

/// Whether `serial` is on the cluster's published revoked list, from a copy at most
/// [`super::cache::REVOKED_LIST_MAX_AGE`] old. When the list cannot be read, the cached
/// credential is served (the proxy enforces revocation anyway) with a warning.
async fn is_revoked(
    client: &Client,
    cache: &CredentialCache,
    settings: &Settings,
    cluster: &str,
    serial: &str,
    now: OffsetDateTime,
) -> bool {
    let list_key = revoked_list_key(settings.url.as_str(), cluster);
    let kept = cache.load_revoked(&list_key);
    if let Some(list) = kept.as_ref().filter(|l| l.is_fresh(now)) {
        return list.contains(serial);
    }
    let etag = kept.as_ref().and_then(|l| l.etag.clone());
    let list = match client.fetch(&["v1", "clusters", cluster, "revoked.map"], etag.as_deref()).await {
        Ok(fetched) if fetched.status == reqwest::StatusCode::NOT_MODIFIED && kept.is_some() => {
            RevokedList { fetched_at: now, ..kept.expect("checked") }
        }
        Ok(fetched) if fetched.status == reqwest::StatusCode::OK => {
            RevokedList::from_map(&String::from_utf8_lossy(&fetched.body), fetched.etag, now)
        }
        Ok(fetched) => {
            eprintln!(
                "kca: warning: the revoked list answered {}; serving the cached certificate",
                fetched.status
            );
            return false;
        }
        Err(err) => {
            eprintln!("kca: warning: cannot read the revoked list ({err}); serving the cached certificate");
            return false;
        }
    };
    if let Err(err) = cache.store_revoked(&list_key, &list) {
        eprintln!("kca: warning: cannot keep the revoked list: {err:#}");
    }
    list.contains(serial)
}

#[derive(Debug, Deserialize)]
struct Me {
    subject: String,
}

/// Who the token speaks for, read (unverified) from its claims: only to name a cache entry.
fn session_subject(settings: &Settings) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    settings
        .token
        .as_ref()
        .and_then(|t| t.expose().split('.').nth(1).map(str::to_string))
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
        .and_then(|claims| claims.get("sub").and_then(|j| j.as_str()).map(str::to_string))
        .unwrap_or_else(|| "anonymous".into())
}

#[derive(Debug, Deserialize)]
struct ClusterView {
    name: String,
    server: String,
}

async fn exec_kubeconfig(settings: &Settings, client: &Client, args: &KubeconfigArgs) -> anyhow::Result<()> {
    let (format, file) = args.output.resolve(&KUBECONFIG_FORMATS)?;
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
    let user = match &args.user {
        Some(user) => user.clone(),
        None => {
            client
                .get_json::<Me>(&["v1", "me"])
                .await
                .context("reading who you are (kca login first)")?
                .subject
        }
    };
    let command = std::env::current_exe().context("locating the kca binary")?;
    let command = command.to_str().context("the kca binary's path is not UTF-8")?;
    let install_hint = format!(
        "This kubeconfig runs kca ({command}) to get a short-lived client certificate. Install kca \
         there, or run `kca kubeconfig {} {} --exec` again, and set KCA_TOKEN (or run kca login).",
        args.cluster,
        args.user.as_deref().unwrap_or("")
    );
    let kubeconfig = render(
        &ClusterEndpoint { name: &cluster.name, server: &cluster.server, ca_bundle_pem: &ca_bundle_pem },
        &user,
        &UserCredential::Exec { command, args: plugin_args(settings, args), install_hint: &install_hint },
    );
    let kubeconfig = finish(&kubeconfig, args.name.as_deref(), format)?;
    match &file {
        Some(path) => {
            write_private_file(path, kubeconfig.as_bytes())?;
            eprintln!("kca: wrote {} ({}@{}, exec plugin)", path.display(), user, cluster.name);
        }
        None => print!("{}", kubeconfig.as_str()),
    }
    Ok(())
}

/// The arguments kubectl runs kca with: the same request, the same server and trust; never the
/// token, which the plugin reads from KCA_TOKEN or the config file at run time.
fn plugin_args(settings: &Settings, args: &KubeconfigArgs) -> Vec<String> {
    let mut out: Vec<String> = vec!["kubeconfig".into(), args.cluster.clone()];
    out.extend(args.user.clone());
    out.push("--exec-credential".into());
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
    let (format, file) = args.output.resolve(&["pem", "json"])?;
    if format == "json" {
        let authority: serde_json::Value = client
            .json(client.maybe_authorized(
                reqwest::Method::GET,
                &["v1", "clusters", &args.cluster, "authorities", &args.kind],
            ))
            .await?;
        let text = format!("{}\n", serde_json::to_string_pretty(&authority)?);
        match &file {
            Some(path) => write_public_file(path, text.as_bytes())?,
            None => print_json(&authority)?,
        }
        return Ok(());
    }
    let bundle =
        client.fetch(&["v1", "clusters", &args.cluster, "authorities", &args.kind, "ca.pem"], None).await?;
    match &file {
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
            session_file: None,
        };
        let args = KubeconfigArgs {
            connection: ConnectionArgs::default(),
            cluster: "prod".into(),
            user: Some("alice".into()),
            groups: vec!["dev".into(), "ops".into()],
            ttl: Some(Duration::from_secs(3600)),
            output: DocumentOutput::default(),
            name: None,
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
