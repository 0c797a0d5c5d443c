//! The `kca` command line: the server's own commands (`serve`, `migrate`, `token`, `openapi`) and
//! the client commands that talk to a kca server over HTTPS (`kubeconfig`, `authority-cert`,
//! `clusters`, `certificates`, `revoke-user`, and `crl-sync` on the proxy host).
//!
//! Client commands find the server, token and trusted CA in flags, then `KCA_URL`, `KCA_TOKEN`,
//! `KCA_CACERT`, then the config file (see [`settings`]). `-o/--output` names the output
//! *format* on every command (`text` or `json` for records; `yaml`/`json` for kubeconfigs,
//! `pem`/`json` for CA bundles); files are named with `--file` (`-o FILE` on `kubeconfig` and
//! `authority-cert` still works for one release, with a warning).

pub mod audit;
pub mod authorities;
pub mod backup;
pub mod cache;
pub mod certificates;
pub mod client;
pub mod cluster_update;
pub mod clusters;
pub mod components;
pub mod crl_sync;
pub mod haproxy;
pub mod keys;
pub mod kubeconfig;
pub mod login;
pub mod output;
pub mod pki_export;
pub mod pki_renew;
pub mod settings;
pub mod tokens;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{LogFormat, ServeArgs, StoreArgs, parse_duration};
use crate::token::{Scope, TokenRequest};

#[derive(Debug, Parser)]
#[command(name = "kca", version, about = "A private certificate authority for Kubernetes clusters")]
pub struct Cli {
    /// Log format of the commands that log (serve, migrate, crl-sync): text or json.
    #[arg(long, global = true, env = "KCA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the kca server.
    Serve(Box<ServeArgs>),
    /// Apply database migrations and exit.
    Migrate(StoreArgs),
    /// Mint API tokens on the server host (same database and master key as `serve`): for the
    /// first admin; afterwards use `kca tokens`.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Write a consistent, integrity-checked archive of the database (keys sealed), on the
    /// server host, while servers run.
    Backup(backup::BackupArgs),
    /// Restore an archive of `kca backup` into an empty database (SQLite or Postgres).
    Restore(backup::RestoreArgs),
    /// Master-key custody on the server host (same database and master key as `serve`).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Mint, list and revoke API tokens over the API, and rotate their signing key.
    Tokens(tokens::TokensArgs),
    /// Print the OpenAPI document.
    Openapi,
    /// Sign in through the organisation's identity provider (single sign-on, device grant run by
    /// kca); the session is kept in the config directory and used when no token is given.
    Login(login::LoginArgs),
    /// End the single sign-on session: revoke it and forget it.
    Logout(login::LogoutArgs),
    /// Issue a user kubeconfig, an exec credential (-x), or an exec-plugin kubeconfig (--exec).
    Kubeconfig(Box<kubeconfig::KubeconfigArgs>),
    /// Print the PEM bundle of one of a cluster's CAs (every live generation).
    AuthorityCert(kubeconfig::AuthorityCertArgs),
    /// Create, list, show and delete clusters.
    Clusters(clusters::ClustersArgs),
    /// List, show and revoke a cluster's certificates.
    Certificates(certificates::CertificatesArgs),
    /// List a cluster's CAs, rotate one, retire an old generation.
    Authorities(authorities::AuthoritiesArgs),
    /// The audit trail, newest first, filtered by cluster, time, actor and action.
    Audit(audit::AuditArgs),
    /// Revoke every unexpired certificate of a user.
    RevokeUser(certificates::RevokeUserArgs),
    /// Write a control plane's CA files and component certificates in kubeadm's layout.
    Pki(pki_export::PkiArgs),
    /// Keep a proxy's client CA bundle, CRLs and revoked-serial map in step with kca: verified,
    /// written atomically, pushed to HAProxy with no reload.
    CrlSync(Box<crl_sync::CrlSyncArgs>),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new token to stdout.
    Create(TokenCreateArgs),
}

#[derive(Debug, clap::Args)]
pub struct TokenCreateArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Who the token speaks for (recorded in the audit trail).
    #[arg(long)]
    pub subject: String,
    /// admin, clusters:write, kubeconfigs:issue, certificates:revoke or read.
    #[arg(long = "scope", required = true, value_parser = parse_scope)]
    pub scopes: Vec<Scope>,
    /// A cluster (name or id) the token may touch (repeatable); all when none is given. The
    /// token is bound to the cluster's id: a cluster created again under the name is another.
    #[arg(long = "cluster")]
    pub clusters: Vec<String>,
    /// A group pattern the token may issue (repeatable); the cluster policy alone when none.
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// Longest certificate TTL the token may issue, e.g. 8h.
    #[arg(long, value_parser = parse_duration)]
    pub max_ttl: Option<std::time::Duration>,
    /// Lifetime of the token, e.g. 24h or 90d.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub ttl: std::time::Duration,
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    Scope::parse(text)
        .ok_or_else(|| format!("unknown scope {text:?}; valid: {}", Scope::ALL.map(Scope::as_str).join(", ")))
}

pub async fn run(cli: Cli) -> ExitCode {
    if matches!(cli.command, Command::Serve(_) | Command::Migrate(_) | Command::CrlSync(_)) {
        crate::telemetry::init(cli.log_format);
    }
    let result = match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Token(TokenCommand::Create(args)) => token_create(args).await,
        Command::Keys(command) => keys::run(command).await,
        Command::Backup(args) => backup::backup(args).await,
        Command::Restore(args) => backup::restore(args).await,
        Command::Tokens(args) => tokens::run(args).await,
        Command::Openapi => {
            print!("{}", crate::http::openapi_json());
            Ok(())
        }
        Command::Login(args) => login::login(args).await,
        Command::Logout(args) => login::logout(args).await,
        Command::Kubeconfig(args) => kubeconfig::run(*args).await,
        Command::AuthorityCert(args) => kubeconfig::authority_cert(args).await,
        Command::Clusters(args) => clusters::run(args).await,
        Command::Certificates(args) => certificates::run(args).await,
        Command::Authorities(args) => authorities::run(args).await,
        Command::Audit(args) => audit::run(args).await,
        Command::RevokeUser(args) => certificates::revoke_user(args).await,
        Command::Pki(args) => pki_export::run(args).await,
        Command::CrlSync(args) => crl_sync::run(*args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kca: {}", error_report(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each said once: many errors (sqlx's among them) already
/// repeat their source in their own message, so `{:#}` would print it again.
fn error_report(err: &anyhow::Error) -> String {
    let mut report = String::new();
    for cause in err.chain() {
        let message = cause.to_string();
        if !report.contains(&message) {
            if !report.is_empty() {
                report.push_str(": ");
            }
            report.push_str(&message);
        }
    }
    report
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let application = crate::server::Application::build(&args).await?;
    application.run().await?;
    Ok(())
}

async fn migrate(args: StoreArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)?;
    // The same lock as every other start-up path: a server starting meanwhile waits.
    let _setup = crate::app::lock_data_dir(&args.data_dir).await?;
    let store = crate::store::connect(&args.database_url().map_err(anyhow::Error::msg)?, 2).await?;
    store.migrate().await?;
    eprintln!("kca: the {} database is up to date", store.backend());
    Ok(())
}

/// Who runs a command on the server host (whoever can read the database and the master key), as
/// the audit trail names them: `host:$USER`.
fn host_operator() -> String {
    let operator = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("host:{}", operator.chars().filter(|c| !c.is_control()).take(64).collect::<String>())
}

async fn token_create(args: TokenCreateArgs) -> anyhow::Result<()> {
    let (store, _, tokens) = crate::app::open_store_and_keys(&args.store).await?;
    if args.scopes.contains(&Scope::CertificatesIssue) {
        eprintln!(
            "kca: warning: certificates:issue no longer allows anything: every component profile is \
             privileged and needs an admin token of the cluster"
        );
    }
    let mut clusters = Vec::with_capacity(args.clusters.len());
    for name in &args.clusters {
        let cluster = store.find_cluster(name).await.map_err(|e| match e {
            crate::store::StoreError::NotFound => anyhow::anyhow!("no cluster {name:?}"),
            other => other.into(),
        })?;
        clusters.push(cluster.id.to_string());
    }
    let request = TokenRequest {
        subject: args.subject,
        scopes: args.scopes,
        clusters: if clusters.is_empty() { vec![crate::token::ALL_CLUSTERS.into()] } else { clusters },
        groups: (!args.groups.is_empty()).then_some(args.groups),
        max_ttl: args.max_ttl.map(|d| d.as_secs()),
        ttl: time::Duration::try_from(args.ttl)?,
        person: None,
    };
    let created_by = host_operator();
    let now = time::OffsetDateTime::now_utc();
    let (token, record) = tokens.mint(&request, &created_by, now)?;
    let audit = crate::store::AuditEntry {
        at: now,
        actor: created_by.clone(),
        action: "token.create".into(),
        object_type: "token".into(),
        object_id: record.id.to_string(),
        cluster_id: None,
        remote_addr: None,
        details: serde_json::json!({
            "subject": record.subject,
            "scopes": record.scopes,
            "clusters": record.clusters,
            "expires_at": record.expires_at.unix_timestamp(),
        }),
    };
    store.insert_token(&record, &audit).await?;
    println!("{token}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn an_error_report_says_each_cause_once() {
        // Like sqlx's MigrateError: the message repeats the source it also returns.
        #[derive(Debug, thiserror::Error)]
        #[error("while executing migration 1: {0}")]
        struct Execute(#[source] std::io::Error);
        let repeating = anyhow::Error::new(Execute(std::io::Error::other("table settings already exists")))
            .context("migration failed");
        assert_eq!(
            error_report(&repeating),
            "migration failed: while executing migration 1: table settings already exists"
        );
        let plain = anyhow::Error::new(std::io::Error::other("refused")).context("cannot connect");
        assert_eq!(error_report(&plain), "cannot connect: refused");
    }
}
