//! Typed configuration: flags, each with a `KCA_*` environment variable, defaults that run with no
//! setup, and secrets that never print.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where kca keeps its data and how it opens its keys; shared by `serve`, `migrate` and `token`.
#[derive(clap::Args, Clone)]
pub struct StoreArgs {
    /// Directory for the embedded database, the development master key and TLS files.
    #[arg(long, env = "KCA_DATA_DIR", default_value = "./kca-data")]
    pub data_dir: PathBuf,

    /// `postgres://…` for production; the default is a SQLite file in the data directory.
    #[arg(long, env = "KCA_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// File holding the database URL (it carries a password), e.g. a Docker secret.
    #[arg(long, env = "KCA_DATABASE_URL_FILE", conflicts_with = "database_url")]
    pub database_url_file: Option<PathBuf>,

    /// Largest database connection pool (Postgres).
    #[arg(long, env = "KCA_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// File holding the 32-byte master key (raw or base64). `KCA_MASTER_KEY` (base64) may hold it
    /// directly; with neither, a development key is created in the data directory.
    #[arg(long, env = "KCA_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,

    /// `KCA_MASTER_KEY`, the master key itself (base64): from the environment only, never a flag
    /// (a command line is visible to every user of the host).
    #[arg(skip = master_key_from_environment())]
    pub master_key: Option<zeroize::Zeroizing<String>>,

    /// Version number stored beside every key the master key seals.
    #[arg(long, env = "KCA_MASTER_KEY_VERSION", default_value_t = 1)]
    pub master_key_version: i32,

    /// `iss` of the tokens kca mints and accepts.
    #[arg(long, env = "KCA_TOKEN_ISSUER", default_value = "kca")]
    pub token_issuer: String,

    /// `aud` of the tokens kca mints and accepts.
    #[arg(long, env = "KCA_TOKEN_AUDIENCE", default_value = "kca")]
    pub token_audience: String,

    /// Longest lifetime of an API token; longer ones are neither minted nor accepted.
    #[arg(long, env = "KCA_TOKEN_MAX_LIFETIME", default_value = "90d", value_parser = parse_duration)]
    pub token_max_lifetime: Duration,
}

impl std::fmt::Debug for StoreArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreArgs")
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_deref().map(redact_url))
            .field("master_key_file", &self.master_key_file)
            .field("master_key", &self.master_key.as_ref().map(|_| "<from KCA_MASTER_KEY>"))
            .finish_non_exhaustive()
    }
}

fn master_key_from_environment() -> Option<zeroize::Zeroizing<String>> {
    std::env::var("KCA_MASTER_KEY").ok().map(zeroize::Zeroizing::new)
}

/// How log lines are written: `text` (readable lines) or `json` (one JSON object a line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl StoreArgs {
    /// The database URL (given, or read from its file), or the embedded SQLite file in the data
    /// directory.
    pub fn database_url(&self) -> Result<String, String> {
        if let Some(path) = &self.database_url_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read KCA_DATABASE_URL_FILE {}: {e}", path.display()))?;
            return Ok(text.trim().to_string());
        }
        Ok(match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("kca.db").display()),
        })
    }
}

/// How `kca serve` listens and behaves.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Address to listen on.
    #[arg(long, env = "KCA_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,

    /// PEM certificate chain to serve HTTPS with (reloaded on SIGHUP).
    #[arg(long, env = "KCA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "KCA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Serve plain HTTP, for use behind a TLS-terminating ingress only.
    #[arg(long, env = "KCA_HTTP", conflicts_with_all = ["tls_cert", "tls_key"])]
    pub http: bool,

    /// Serve CA certificates, bundles and CRLs without a token.
    #[arg(long, env = "KCA_PUBLIC_READ", default_value_t = true, action = clap::ArgAction::Set)]
    pub public_read: bool,

    /// Lifetime of each CRL (nextUpdate - thisUpdate, at least 1h); re-signed when half of it has
    /// passed.
    #[arg(long, env = "KCA_CRL_VALIDITY", default_value = "7d", value_parser = parse_crl_validity)]
    pub crl_validity: Duration,

    /// Longest time a request may take.
    #[arg(long, env = "KCA_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Issuances per minute allowed to one token subject (0: unlimited).
    #[arg(long, env = "KCA_ISSUE_RATE_LIMIT", default_value_t = 0)]
    pub issue_rate_limit: u32,

    /// Allow browsers on these origins to call the API (CORS); none by default.
    #[arg(long, env = "KCA_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    #[command(flatten)]
    pub oidc: OidcArgs,
}

/// Single sign-on: people sign in through the organisation's OpenID Provider. Off unless
/// `KCA_OIDC_ISSUER` is set.
#[derive(clap::Args, Clone, Debug)]
pub struct OidcArgs {
    /// The OpenID Provider's issuer URL (https; its discovery document is read from
    /// `<issuer>/.well-known/openid-configuration`). Single sign-on is off without it.
    #[arg(long = "oidc-issuer", env = "KCA_OIDC_ISSUER", value_name = "URL")]
    pub issuer: Option<String>,

    /// The client id kca is registered under at the provider.
    #[arg(long = "oidc-client-id", env = "KCA_OIDC_CLIENT_ID", requires = "issuer")]
    pub client_id: Option<String>,

    /// File holding the client secret (a confidential client). Without it kca is a public client
    /// and relies on PKCE alone.
    #[arg(long = "oidc-client-secret-file", env = "KCA_OIDC_CLIENT_SECRET_FILE", value_name = "FILE")]
    pub client_secret_file: Option<PathBuf>,

    /// The ID-token claim that names the person; the certificate's CN is the prefix and this.
    #[arg(long = "oidc-username-claim", env = "KCA_OIDC_USERNAME_CLAIM", default_value = "email")]
    pub username_claim: String,

    /// The ID-token claim that lists the person's groups at the provider.
    #[arg(long = "oidc-groups-claim", env = "KCA_OIDC_GROUPS_CLAIM", default_value = "groups")]
    pub groups_claim: String,

    /// The scopes kca asks for (space-separated; `openid` is always asked for). Dex gives groups
    /// only with the `groups` scope; Keycloak refuses scopes the client does not have.
    #[arg(long = "oidc-scopes", env = "KCA_OIDC_SCOPES", default_value = "openid email profile groups")]
    pub scopes: String,

    /// Put before the username in the CN, so that people cannot collide with other users.
    #[arg(long = "oidc-username-prefix", env = "KCA_OIDC_USERNAME_PREFIX", default_value = "oidc:")]
    pub username_prefix: String,

    /// A PEM file of CA certificates to trust for the provider, beside the system roots (its
    /// private CA).
    #[arg(long = "oidc-extra-ca-file", env = "KCA_OIDC_EXTRA_CA_FILE", value_name = "FILE")]
    pub extra_ca_file: Option<PathBuf>,

    /// kca's external base URL (e.g. https://kca.example.com); the redirect URI is
    /// `<url>/auth/callback`. When unset it is built from the URL each request reached.
    #[arg(long = "public-url", env = "KCA_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// How long a sign-in lasts (the session token's lifetime).
    #[arg(long = "oidc-session-ttl", env = "KCA_OIDC_SESSION_TTL", default_value = "8h", value_parser = parse_duration)]
    pub session_ttl: Duration,

    /// How long after signing in at the provider a session may still be renewed (by
    /// `POST /v1/auth/session/refresh`, which `kca` does before its session ends); then the
    /// person signs in again.
    #[arg(long = "oidc-session-max", env = "KCA_OIDC_SESSION_MAX", default_value = "7d", value_parser = parse_duration)]
    pub session_max: Duration,
}

impl Default for OidcArgs {
    fn default() -> Self {
        Self {
            issuer: None,
            client_id: None,
            client_secret_file: None,
            username_claim: "email".into(),
            groups_claim: "groups".into(),
            scopes: "openid email profile groups".into(),
            username_prefix: "oidc:".into(),
            extra_ca_file: None,
            public_url: None,
            session_ttl: Duration::from_secs(8 * 3600),
            session_max: Duration::from_secs(7 * 86_400),
        }
    }
}

/// The longest duration [`parse_duration`] accepts: 100 years.
pub const MAX_DURATION_SECONDS: u64 = 100 * 365 * 86_400;

/// `90s`, `15m`, `12h`, `7d`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 =
        number.parse().map_err(|_| format!("{text:?} is not a duration like 90s, 15m, 12h or 7d"))?;
    let unit_seconds: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    // Beyond a century nothing kca configures makes sense, and date arithmetic would overflow.
    let seconds = number
        .checked_mul(unit_seconds)
        .filter(|seconds| *seconds <= MAX_DURATION_SECONDS)
        .ok_or_else(|| format!("{text:?} is too long (at most 100 years)"))?;
    Ok(Duration::from_secs(seconds))
}

/// A CRL validity: thisUpdate is backdated five minutes, so anything short would publish CRLs that
/// are expired or about to be.
fn parse_crl_validity(text: &str) -> Result<Duration, String> {
    let validity = parse_duration(text)?;
    if validity < Duration::from_secs(3600) {
        return Err("a CRL validity must be at least 1h".into());
    }
    Ok(validity)
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => {
                    format!("{}{}:***{}", &url[..scheme_end + 3], &credentials[..colon], &url[at..])
                }
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert!(parse_duration("7w").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(redact_url("postgres://kca:s3cret@db:5432/kca"), "postgres://kca:***@db:5432/kca");
        assert_eq!(redact_url("postgres://db/kca"), "postgres://db/kca");
    }
}
