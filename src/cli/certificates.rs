//! `kca certificates list|show|revoke|issue` (issue: [`super::components`]) and `kca revoke-user`.

use serde_json::{Value, json};

use super::client::Client;
use super::output::{Format, FormatArg, cell, print_json, render_fields, render_table};
use super::settings::ConnectionArgs;

/// The RFC 5280 reasons the server accepts.
const REASONS: [&str; 8] = [
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "privilegeWithdrawn",
    "aACompromise",
];

#[derive(Debug, clap::Args)]
pub struct CertificatesArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(subcommand)]
    pub command: CertificatesCommand,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Status {
    Active,
    Expired,
    Revoked,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Expired => "expired",
            Status::Revoked => "revoked",
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum CertificatesCommand {
    /// List a cluster's certificates, newest first (every page).
    List {
        /// Cluster name or id.
        cluster: String,
        /// Only this user's (CN) certificates.
        #[arg(long)]
        user: Option<String>,
        /// Only certificates in this state.
        #[arg(long, value_enum)]
        status: Option<Status>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Show one certificate (`-o json` includes its PEM).
    Show {
        /// Cluster name or id.
        cluster: String,
        /// Serial number, hex.
        serial: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Issue a component certificate (key generated here) into files, mode 0600.
    Issue(Box<super::components::IssueArgs>),
    /// Revoke one certificate; the CRLs listing it are published before this returns.
    Revoke {
        /// Cluster name or id.
        cluster: String,
        /// Serial number, hex.
        serial: String,
        /// The RFC 5280 reason.
        #[arg(long, value_parser = REASONS, default_value = "unspecified")]
        reason: String,
        #[command(flatten)]
        format: FormatArg,
    },
}

#[derive(Debug, clap::Args)]
pub struct RevokeUserArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Cluster name or id.
    pub cluster: String,
    /// The user (CN) whose unexpired, unrevoked certificates are all revoked.
    pub user: String,
    /// The RFC 5280 reason.
    #[arg(long, value_parser = REASONS, default_value = "unspecified")]
    pub reason: String,
    #[command(flatten)]
    pub format: FormatArg,
}

pub async fn run(args: CertificatesArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.connection.resolve()?)?;
    match args.command {
        CertificatesCommand::List { cluster, user, status, format } => {
            let mut query = Vec::new();
            if let Some(user) = user {
                query.push(("user", user));
            }
            if let Some(status) = status {
                query.push(("status", status.as_str().to_string()));
            }
            let items = client.list_all(&["v1", "clusters", &cluster, "certificates"], &query).await?;
            match format.format {
                Format::Json => print_json(&items)?,
                Format::Text => print!("{}", certificate_table(&items)),
            }
        }
        CertificatesCommand::Show { cluster, serial, format } => {
            let certificate: Value =
                client.get_json(&["v1", "clusters", &cluster, "certificates", &serial]).await?;
            show(&certificate, format.format)?;
        }
        CertificatesCommand::Issue(issue) => super::components::issue(&client, &issue).await?,
        CertificatesCommand::Revoke { cluster, serial, reason, format } => {
            let certificate: Value = client
                .post_json(
                    &["v1", "clusters", &cluster, "certificates", &serial, "revoke"],
                    &json!({"reason": reason}),
                )
                .await?;
            match format.format {
                Format::Json => print_json(&certificate)?,
                Format::Text => println!(
                    "revoked {} ({}, {})",
                    cell(&certificate["serial"]),
                    cell(&certificate["common_name"]),
                    cell(&certificate["revocation_reason"])
                ),
            }
        }
    }
    Ok(())
}

pub async fn revoke_user(args: RevokeUserArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.connection.resolve()?)?;
    let answer: Value = client
        .post_json(
            &["v1", "clusters", &args.cluster, "revocations"],
            &json!({"user": args.user, "reason": args.reason}),
        )
        .await?;
    if args.format.format == Format::Json {
        return print_json(&answer);
    }
    let serials: Vec<String> =
        answer["serials"].as_array().map(|a| a.iter().map(cell).collect()).unwrap_or_default();
    match serials.len() {
        0 => println!("{} has no live certificate to revoke", args.user),
        n => {
            println!("revoked {n} certificate{} of {}:", if n == 1 { "" } else { "s" }, args.user);
            for serial in serials {
                println!("{serial}");
            }
        }
    }
    Ok(())
}

fn certificate_table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|c| {
            ["serial", "common_name", "groups", "not_after", "status"].iter().map(|k| cell(&c[k])).collect()
        })
        .collect();
    render_table(&["SERIAL", "USER", "GROUPS", "NOT AFTER", "STATUS"], &rows)
}

fn show(certificate: &Value, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        return print_json(certificate);
    }
    let c = certificate;
    let mut fields = vec![
        ("serial", cell(&c["serial"])),
        ("user", cell(&c["common_name"])),
        ("groups", cell(&c["groups"])),
        ("profile", cell(&c["profile"])),
        ("status", cell(&c["status"])),
        ("not before", cell(&c["not_before"])),
        ("not after", cell(&c["not_after"])),
        ("issuer", format!("{} CA, generation {}", cell(&c["kind"]), cell(&c["generation"]))),
        ("fingerprint", cell(&c["fingerprint_sha256"])),
        ("issued by", cell(&c["issued_by"])),
        ("created", cell(&c["created_at"])),
    ];
    for (label, key) in [("dns names", "dns_names"), ("ip addresses", "ip_addresses")] {
        if c[key].as_array().is_some_and(|a| !a.is_empty()) {
            fields.push((label, cell(&c[key])));
        }
    }
    if !c["revoked_at"].is_null() {
        fields.push(("revoked", cell(&c["revoked_at"])));
        fields.push(("reason", cell(&c["revocation_reason"])));
    }
    print!("{}", render_fields(&fields));
    Ok(())
}
