//! `kca clusters list|create|import|show|update|delete` (update: [`super::cluster_update`]).

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::bail;
use serde_json::{Value, json};

use super::client::Client;
use super::output::{Format, FormatArg, cell, print_json, render_fields, render_table};
use super::settings::ConnectionArgs;
use crate::config::parse_duration;

#[derive(Debug, clap::Args)]
pub struct ClustersArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(subcommand)]
    pub command: ClustersCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ClustersCommand {
    /// List the clusters (every page).
    List(FormatArg),
    /// Create a cluster and its five CAs.
    Create(CreateArgs),
    /// Create a cluster that adopts an existing kubeadm PKI (`/etc/kubernetes/pki`): `ca.*` becomes
    /// its control-plane CA, `front-proxy-ca.*` its aggregation CA, `etcd/ca.*` its etcd CA, and
    /// `sa.key` its service-account signing key; the operators and kubelet CAs are made fresh
    /// unless given. One call: nothing is created when a key is refused.
    Import(ImportArgs),
    /// Show a cluster: its server, policy, labels and CAs.
    Show {
        /// Cluster name or id.
        cluster: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Change a cluster's server, labels or policy (access rules included), safely against
    /// concurrent changes (If-Match).
    Update(Box<super::cluster_update::UpdateArgs>),
    /// Delete a cluster and its CAs; its certificates stop being published.
    Delete {
        /// Cluster name or id.
        cluster: String,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Unique name, a DNS label.
    pub name: String,
    /// The kube-apiserver URL written into kubeconfigs (https).
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// A label `key=value` (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Key algorithm of the five CAs: p256 (default), p384 or ed25519.
    #[arg(long, value_name = "ALGORITHM", value_parser = ["p256", "p384", "ed25519"])]
    pub key_algorithm: Option<String>,
    /// Where the five CA keys are kept: sealed (default, in the database under the master key) or
    /// pkcs11 (generated in the server's PKCS#11 token, which they never leave).
    #[arg(long, value_name = "STORAGE", value_parser = ["sealed", "pkcs11"])]
    pub key_storage: Option<String>,
    /// Policy: TTL of a certificate when the request gives none (e.g. 1h).
    #[arg(long, value_name = "TTL", value_parser = parse_duration)]
    pub default_ttl: Option<Duration>,
    /// Policy: shortest TTL a request may ask for.
    #[arg(long, value_name = "TTL", value_parser = parse_duration)]
    pub min_ttl: Option<Duration>,
    /// Policy: longest TTL a request may ask for (e.g. 8h).
    #[arg(long, value_name = "TTL", value_parser = parse_duration)]
    pub max_ttl: Option<Duration>,
    /// Policy: most groups in one certificate.
    #[arg(long, value_name = "N")]
    pub max_groups: Option<u32>,
    /// Policy: a glob a requested group must match (repeatable; `*` when none is given).
    #[arg(long = "allowed-group", value_name = "PATTERN")]
    pub allowed_groups: Vec<String>,
    /// Policy: let admin tokens issue system:masters.
    #[arg(long)]
    pub allow_system_masters: bool,
    #[command(flatten)]
    pub format: FormatArg,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Example (needs an admin token):\n  \
    kca clusters import prod --server https://k8s.example.com:6443 --pki-dir /etc/kubernetes/pki")]
pub struct ImportArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// kubeadm's certificate directory.
    #[arg(long, value_name = "DIR", default_value = "/etc/kubernetes/pki")]
    pub pki_dir: std::path::PathBuf,
    /// An operators CA to adopt as well: its certificate and key files (default: a fresh one).
    #[arg(long, num_args = 2, value_names = ["CERT", "KEY"])]
    pub operators_ca: Option<Vec<std::path::PathBuf>>,
    /// A kubelet CA to adopt as well: its certificate and key files (default: a fresh one).
    #[arg(long, num_args = 2, value_names = ["CERT", "KEY"])]
    pub kubelet_ca: Option<Vec<std::path::PathBuf>>,
}

/// kubeadm's CA files, by kca authority kind: (kind, base name under the pki directory).
pub const KUBEADM_CAS: [(&str, &str); 3] =
    [("control-plane", "ca"), ("aggregation", "front-proxy-ca"), ("etcd", "etcd/ca")];

impl ImportArgs {
    /// The cluster to create, with the CAs read from disk. `ca.*` must be there; the front-proxy
    /// and etcd CAs are adopted when present (an external etcd has no `etcd/ca.key`).
    fn body(&self) -> anyhow::Result<Value> {
        use anyhow::Context;
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        };
        let mut authorities = serde_json::Map::new();
        for (kind, base) in KUBEADM_CAS {
            let cert = self.pki_dir.join(format!("{base}.crt"));
            let key = self.pki_dir.join(format!("{base}.key"));
            if kind != "control-plane" && !cert.exists() && !key.exists() {
                eprintln!("kca: no {} here: the {kind} CA will be a fresh one", cert.display());
                continue;
            }
            if !key.exists() {
                bail!(
                    "{} is missing: kca signs with the CA's key (kubeadm's external CA mode cannot be adopted)",
                    key.display()
                );
            }
            authorities.insert(
                kind.into(),
                json!({"certificate_pem": read(&cert)?, "private_key_pem": read(&key)?}),
            );
        }
        for (kind, files) in [("operators", &self.operators_ca), ("kubelet", &self.kubelet_ca)] {
            if let Some([cert, key]) = files.as_deref() {
                authorities.insert(
                    kind.into(),
                    json!({"certificate_pem": read(cert)?, "private_key_pem": read(key)?}),
                );
            }
        }
        let mut body = self.create.body();
        body["authorities"] = authorities.into();
        // kubeadm's service-account signing key, when there: tokens it signed keep verifying.
        let sa_key = self.pki_dir.join("sa.key");
        if sa_key.exists() {
            body["service_account_key_pem"] = read(&sa_key)?.into();
        }
        Ok(body)
    }
}

pub(super) fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not key=value"))
}

impl CreateArgs {
    fn body(&self) -> Value {
        let mut policy = serde_json::Map::new();
        let mut set = |key: &str, value: Value| {
            policy.insert(key.into(), value);
        };
        if let Some(ttl) = self.default_ttl {
            set("default_ttl_seconds", ttl.as_secs().into());
        }
        if let Some(ttl) = self.min_ttl {
            set("min_ttl_seconds", ttl.as_secs().into());
        }
        if let Some(ttl) = self.max_ttl {
            set("max_ttl_seconds", ttl.as_secs().into());
        }
        if let Some(n) = self.max_groups {
            set("max_groups", n.into());
        }
        if !self.allowed_groups.is_empty() {
            set("allowed_groups", json!(self.allowed_groups));
        }
        if self.allow_system_masters {
            set("allow_system_masters", true.into());
        }
        let mut body = json!({"name": self.name, "server": self.server});
        if !policy.is_empty() {
            body["policy"] = policy.into();
        }
        if !self.labels.is_empty() {
            body["labels"] = self.labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        }
        if let Some(algorithm) = &self.key_algorithm {
            body["key_algorithm"] = json!(algorithm);
        }
        if let Some(storage) = &self.key_storage {
            body["key_storage"] = json!(storage);
        }
        body
    }
}

pub async fn run(args: ClustersArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.connection.resolve()?)?;
    match args.command {
        ClustersCommand::List(FormatArg { format }) => {
            let items = client.list_all(&["v1", "clusters"], &[]).await?;
            match format {
                Format::Json => print_json(&items)?,
                Format::Text => print!("{}", cluster_table(&items)),
            }
        }
        ClustersCommand::Create(create) => {
            let cluster: Value = client.post_json(&["v1", "clusters"], &create.body()).await?;
            show(&cluster, create.format.format)?;
        }
        ClustersCommand::Import(import) => {
            let body = import.body()?;
            let cluster: Value = client.post_json(&["v1", "clusters"], &body).await?;
            show(&cluster, import.create.format.format)?;
        }
        ClustersCommand::Show { cluster, format } => {
            let cluster: Value = client.get_json(&["v1", "clusters", &cluster]).await?;
            show(&cluster, format.format)?;
        }
        ClustersCommand::Update(update) => super::cluster_update::update(&client, &update).await?,
        ClustersCommand::Delete { cluster, yes } => {
            if !yes {
                confirm(&format!("Delete cluster {cluster:?}, its five CAs and its records?"))?;
            }
            client.delete(&["v1", "clusters", &cluster]).await?;
            eprintln!("kca: deleted cluster {cluster}");
        }
    }
    Ok(())
}

/// Ask on the terminal; without one, refuse (a script must say `--yes`).
fn confirm(question: &str) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("refusing to delete without --yes (stdin is not a terminal)");
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        bail!("not deleted");
    }
    Ok(())
}

fn cluster_table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|c| {
            vec![
                cell(&c["name"]),
                cell(&c["server"]),
                cell(&c["key_algorithm"]),
                cell(&c["labels"]),
                cell(&c["created_at"]),
            ]
        })
        .collect();
    render_table(&["NAME", "SERVER", "KEY", "LABELS", "CREATED"], &rows)
}

pub(super) fn show(cluster: &Value, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        return print_json(cluster);
    }
    let mut out = render_fields(&[
        ("name", cell(&cluster["name"])),
        ("id", cell(&cluster["id"])),
        ("server", cell(&cluster["server"])),
        ("key algorithm", cell(&cluster["key_algorithm"])),
        ("key storage", cell(&cluster["key_storage"])),
        ("labels", cell(&cluster["labels"])),
        ("created", cell(&cluster["created_at"])),
        ("updated", cell(&cluster["updated_at"])),
    ]);
    if let Some(policy) = cluster["policy"].as_object() {
        out.push_str("\npolicy:\n");
        let fields: Vec<(&str, String)> = policy.iter().map(|(k, v)| (k.as_str(), cell(v))).collect();
        for line in render_fields(&fields).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    if let Some(authorities) = cluster["authorities"].as_array() {
        let rows: Vec<Vec<String>> = authorities
            .iter()
            .map(|a| {
                ["kind", "generation", "state", "key_storage", "not_after", "fingerprint_sha256"]
                    .iter()
                    .map(|k| cell(&a[k]))
                    .collect()
            })
            .collect();
        out.push('\n');
        out.push_str(&render_table(
            &["AUTHORITY", "GENERATION", "STATE", "KEY", "NOT AFTER", "FINGERPRINT"],
            &rows,
        ));
    }
    print!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_policy_fields_given_are_sent() {
        let args = CreateArgs {
            name: "prod".into(),
            server: "https://k:6443".into(),
            labels: vec![("env".into(), "prod".into())],
            key_algorithm: None,
            key_storage: None,
            default_ttl: None,
            min_ttl: None,
            max_ttl: Some(Duration::from_secs(7200)),
            max_groups: None,
            allowed_groups: vec![],
            allow_system_masters: false,
            format: FormatArg::default(),
        };
        assert_eq!(
            args.body(),
            json!({"name": "prod", "server": "https://k:6443", "labels": {"env": "prod"},
                   "policy": {"max_ttl_seconds": 7200}})
        );
        let args = CreateArgs { key_storage: Some("pkcs11".into()), max_ttl: None, labels: vec![], ..args };
        assert_eq!(args.body(), json!({"name": "prod", "server": "https://k:6443", "key_storage": "pkcs11"}));
    }
}
