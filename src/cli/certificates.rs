//! `kca certificates list|show|revoke|issue|expiring` (issue: [`super::components`]) and
//! `kca revoke-user`.

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
    /// Certificates and CAs that expire soon, like `kubeadm certs check-expiration`: name,
    /// expiry, residual time, CA, whether externally managed.
    Expiring {
        /// Cluster name or id.
        cluster: String,
        /// How far ahead to look (e.g. 30d, 12h).
        #[arg(long, default_value = "30d", value_parser = crate::config::parse_duration)]
        within: std::time::Duration,
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
        CertificatesCommand::Expiring { cluster, within, format } => {
            let query = [("expiring_within", format!("{}s", within.as_secs()))];
            let mut items = client.list_all(&["v1", "clusters", &cluster, "certificates"], &query).await?;
            items.sort_by_key(|c| cell(&c["not_after"]));
            let authorities =
                client.get_json::<Vec<Value>>(&["v1", "clusters", &cluster, "authorities"]).await?;
            let now = time::OffsetDateTime::now_utc();
            let horizon = now + within;
            let cas: Vec<&Value> = authorities
                .iter()
                .flat_map(|a| a["generations"].as_array().into_iter().flatten())
                .filter(|g| parse_time(&g["not_after"]).is_some_and(|t| t <= horizon))
                .collect();
            match format.format {
                Format::Json => print_json(&json!({"certificates": items, "authorities": cas}))?,
                Format::Text => print!("{}", expiring_tables(&items, &authorities, horizon, now)),
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

fn parse_time(value: &Value) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(value.as_str()?, &time::format_description::well_known::Rfc3339).ok()
}

/// `kubeadm certs check-expiration`'s residual time: `364d`, `9h`, `<invalid>` once past.
fn residual(not_after: Option<time::OffsetDateTime>, now: time::OffsetDateTime) -> String {
    match not_after.map(|t| t - now) {
        Some(left) if left.is_positive() && left.whole_days() >= 1 => format!("{}d", left.whole_days()),
        Some(left) if left.is_positive() && left.whole_hours() >= 1 => format!("{}h", left.whole_hours()),
        Some(left) if left.is_positive() => format!("{}m", left.whole_minutes()),
        _ => "<invalid>".to_string(),
    }
}

/// Two tables as kubeadm prints them: the leaves expiring by `horizon`, then the CAs. kca holds
/// every CA key, so none is externally managed.
fn expiring_tables(
    items: &[Value],
    authorities: &[Value],
    horizon: time::OffsetDateTime,
    now: time::OffsetDateTime,
) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|c| {
            let name = match c["profile"].as_str() {
                Some(profile) if profile != "user" => format!("{profile} ({})", cell(&c["common_name"])),
                _ => format!("user {}", cell(&c["common_name"])),
            };
            vec![
                name,
                cell(&c["not_after"]),
                residual(parse_time(&c["not_after"]), now),
                cell(&c["kind"]),
                "no".to_string(),
                cell(&c["serial"]),
            ]
        })
        .collect();
    let mut out = render_table(
        &["CERTIFICATE", "EXPIRES", "RESIDUAL TIME", "CERTIFICATE AUTHORITY", "EXTERNALLY MANAGED", "SERIAL"],
        &rows,
    );
    let cas: Vec<Vec<String>> = authorities
        .iter()
        .flat_map(|a| {
            let kind = cell(&a["kind"]);
            a["generations"].as_array().into_iter().flatten().filter_map(move |g| {
                let not_after = parse_time(&g["not_after"])?;
                (not_after <= horizon).then(|| {
                    vec![
                        format!("{kind} CA {}", cell(&g["generation"])),
                        cell(&g["not_after"]),
                        residual(Some(not_after), now),
                        "no".to_string(),
                    ]
                })
            })
        })
        .collect();
    out.push('\n');
    out.push_str(&render_table(
        &["CERTIFICATE AUTHORITY", "EXPIRES", "RESIDUAL TIME", "EXTERNALLY MANAGED"],
        &cas,
    ));
    out
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
