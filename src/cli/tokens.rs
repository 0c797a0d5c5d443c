//! `kca tokens create|list|revoke|rotate-key`: API tokens over the API (an admin token mints tokens
//! no broader than its own). `kca token create` on the server host stays for the first admin.

use std::time::Duration;

use serde_json::{Value, json};

use super::client::Client;
use super::output::{Format, FormatArg, cell, print_json, render_fields, render_table};
use super::settings::ConnectionArgs;
use crate::config::parse_duration;

#[derive(Debug, clap::Args)]
pub struct TokensArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(subcommand)]
    pub command: TokensCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// Mint a token; prints it once on stdout (its record on stderr).
    Create(CreateArgs),
    /// List the registered tokens (never the tokens themselves).
    List(FormatArg),
    /// Revoke a token by id: refused on its next request, by every replica.
    Revoke {
        /// Token id (the `id` of `kca tokens list`).
        id: String,
    },
    /// Sign new tokens with a new key; tokens signed with the previous keys keep working until
    /// they expire.
    RotateKey(FormatArg),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Who the token speaks for (recorded in the audit trail and on what it issues).
    #[arg(long)]
    pub subject: String,
    /// admin, clusters:write, kubeconfigs:issue, certificates:revoke or read (repeatable).
    #[arg(long = "scope", required = true)]
    pub scopes: Vec<String>,
    /// A cluster the token may touch (repeatable); `*` for all. Default: those of your token.
    #[arg(long = "cluster")]
    pub clusters: Vec<String>,
    /// A group pattern the token may issue (repeatable). Default: those of your token.
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// Longest certificate TTL the token may issue, e.g. 8h.
    #[arg(long, value_parser = parse_duration)]
    pub max_ttl: Option<Duration>,
    /// Lifetime of the token, e.g. 24h or 30d.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub ttl: Duration,
}

impl CreateArgs {
    fn body(&self) -> Value {
        let mut body = json!({
            "subject": self.subject,
            "scopes": self.scopes,
            "ttl_seconds": self.ttl.as_secs(),
        });
        if !self.clusters.is_empty() {
            body["clusters"] = json!(self.clusters);
        }
        if !self.groups.is_empty() {
            body["groups"] = json!(self.groups);
        }
        if let Some(max_ttl) = self.max_ttl {
            body["max_ttl_seconds"] = json!(max_ttl.as_secs());
        }
        body
    }
}

pub async fn run(args: TokensArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.connection.resolve()?)?;
    match args.command {
        TokensCommand::Create(create) => {
            let minted: Value = client.post_json(&["v1", "tokens"], &create.body()).await?;
            eprintln!(
                "kca: minted token {} for {} (expires {})",
                cell(&minted["id"]),
                cell(&minted["subject"]),
                cell(&minted["expires_at"])
            );
            println!("{}", minted["token"].as_str().unwrap_or_default());
        }
        TokensCommand::List(FormatArg { format }) => {
            let items = client.list_all(&["v1", "tokens"], &[]).await?;
            match format {
                Format::Json => print_json(&items)?,
                Format::Text => print!("{}", token_table(&items)),
            }
        }
        TokensCommand::Revoke { id } => {
            client.delete(&["v1", "tokens", &id]).await?;
            eprintln!("kca: revoked token {id}");
        }
        TokensCommand::RotateKey(FormatArg { format }) => {
            let rotated: Value = client.post_json(&["v1", "token-keys", "rotate"], &json!({})).await?;
            match format {
                Format::Json => print_json(&rotated)?,
                Format::Text => print!("{}", render_fields(&[("signing key", cell(&rotated["key_id"]))])),
            }
        }
    }
    Ok(())
}

fn token_table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|t| {
            let state = if t["revoked_at"].is_string() { "revoked" } else { "active" };
            vec![
                cell(&t["id"]),
                cell(&t["subject"]),
                cell(&t["scopes"]),
                cell(&t["clusters"]),
                cell(&t["expires_at"]),
                cell(&t["last_used_at"]),
                state.to_string(),
            ]
        })
        .collect();
    render_table(&["ID", "SUBJECT", "SCOPES", "CLUSTERS", "EXPIRES", "LAST USED", "STATE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bounds_given_are_sent() {
        let args = CreateArgs {
            subject: "ci".into(),
            scopes: vec!["kubeconfigs:issue".into()],
            clusters: vec!["prod".into()],
            groups: vec![],
            max_ttl: Some(Duration::from_secs(3600)),
            ttl: Duration::from_secs(86_400),
        };
        assert_eq!(
            args.body(),
            json!({"subject": "ci", "scopes": ["kubeconfigs:issue"], "clusters": ["prod"],
                   "max_ttl_seconds": 3600, "ttl_seconds": 86400})
        );
    }
}
