//! Where the client commands find their server, token and trusted CA: flags, then `KCA_*`
//! environment variables, then the config file.
//!
//! The config file is YAML (`$KCA_CONFIG`, else `$XDG_CONFIG_HOME/kca/config.yaml`, else
//! `~/.config/kca/config.yaml`) with the keys `url`, `token` and `cacert`; a relative `cacert` is
//! read from the file's directory. The token is never taken from a flag value (it would show in
//! `ps` and shell history): `--token-file` names a file that holds it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// The connection flags every client command takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectionArgs {
    /// The kca server, e.g. https://kca.example.com:8443.
    #[arg(long, env = "KCA_URL", global = true, value_name = "URL")]
    pub url: Option<String>,
    /// A PEM file of CA certificates to trust in addition to the system roots (the server's
    /// private serving CA, or kca-data/tls/dev-cert.pem).
    #[arg(long, env = "KCA_CACERT", global = true, value_name = "FILE", value_parser = maybe_path)]
    pub cacert: Option<PathBuf>,
    /// A file holding the API token; else KCA_TOKEN, else `token:` in the config file.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The config file [default: $XDG_CONFIG_HOME/kca/config.yaml or ~/.config/kca/config.yaml].
    #[arg(long, env = "KCA_CONFIG", global = true, value_name = "FILE", value_parser = maybe_path)]
    pub config: Option<PathBuf>,
}

/// A path, where an empty one (`KCA_CACERT=`) means none rather than an error.
fn maybe_path(text: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(text))
}

/// An API token. Its `Debug` form hides it, so it cannot leak through a log or an error.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn new(text: &str) -> Option<Self> {
        let text = text.trim();
        (!text.is_empty()).then(|| Self(text.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// What a client command connects with, once every source is merged.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: url::Url,
    /// Absolute path of the extra trusted CA file.
    pub cacert: Option<PathBuf>,
    pub token: Option<Token>,
    /// The config file, when one was named explicitly (flag or KCA_CONFIG).
    pub explicit_config: Option<PathBuf>,
    /// Where the token came from when it is the stored single sign-on session.
    pub session_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    url: Option<String>,
    token: Option<String>,
    cacert: Option<PathBuf>,
    #[serde(flatten)]
    unknown: std::collections::BTreeMap<String, serde_norway::Value>,
}

/// The config file to read when none is named.
pub fn default_config_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".config"),
    };
    Some(base.join("kca").join("config.yaml"))
}

fn read_config(path: &Path, required: bool) -> anyhow::Result<ConfigFile> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(ConfigFile::default());
        }
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    if text.trim().is_empty() {
        return Ok(ConfigFile::default());
    }
    let config: ConfigFile = serde_norway::from_str(&text)
        // The parser's message may quote the line, and the line may hold the token.
        .map_err(|e| anyhow::anyhow!("{} is not a valid kca config file{}", path.display(), location(&e)))?;
    for key in config.unknown.keys() {
        eprintln!("kca: warning: {} has an unknown key {key:?} (known: url, token, cacert)", path.display());
    }
    if config.token.is_some() {
        warn_if_readable_by_others(path);
    }
    Ok(config)
}

fn location(err: &serde_norway::Error) -> String {
    err.location().map(|l| format!(" (line {}, column {})", l.line(), l.column())).unwrap_or_default()
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "kca: warning: {} holds a token and is readable by other users; chmod 600 it",
            path.display()
        );
    }
}

fn read_token_file(path: &Path) -> anyhow::Result<Token> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Token::new(&text).with_context(|| format!("{} is empty", path.display()))
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// The token of the single sign-on session `kca login` stored for `url`, if it has not ended, and
/// the file it is kept in.
fn session_token(explicit_config: Option<&Path>, url: &url::Url) -> Option<(Token, PathBuf)> {
    let path = super::login::session_path(explicit_config)?;
    let session = super::login::load_session(&path, url, time::OffsetDateTime::now_utc())?;
    Some((Token::new(&session.token)?, path))
}

/// Parse and check a server URL: http(s) only, and a token goes in clear to loopback only.
pub fn parse_server_url(text: &str) -> anyhow::Result<url::Url> {
    let mut url = url::Url::parse(text.trim()).with_context(|| format!("{text:?} is not a URL"))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(name)) => name == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if !loopback {
                bail!("{url} is plain http: kca sends tokens over https only (http is for loopback)");
            }
        }
        other => bail!("{text:?}: the kca URL must be https:// (not {other}://)"),
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        bail!("{text:?} is not a server URL");
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

impl ConnectionArgs {
    /// Merge flags (clap already merged the environment into them) with the config file.
    pub fn resolve(&self) -> anyhow::Result<Settings> {
        let named = self.config.as_ref().filter(|p| !p.as_os_str().is_empty());
        let (path, required) = match named {
            Some(path) => (Some(path.clone()), true),
            None => (default_config_path(), false),
        };
        let file = match &path {
            Some(path) => read_config(path, required)?,
            None => ConfigFile::default(),
        };
        let config_dir = path.as_deref().and_then(Path::parent).map(Path::to_path_buf);

        let url_text = self.url.clone().filter(|u| !u.trim().is_empty()).or(file.url).with_context(|| {
            "no kca server: pass --url, set KCA_URL, or put `url:` in the config file".to_string()
        })?;
        let url = parse_server_url(&url_text)?;

        let cacert = match (&self.cacert, file.cacert) {
            (Some(flag), _) if !flag.as_os_str().is_empty() => Some(absolute(flag)?),
            (_, Some(from_file)) => {
                let joined = match &config_dir {
                    Some(dir) if from_file.is_relative() => dir.join(from_file),
                    _ => from_file,
                };
                Some(absolute(&joined)?)
            }
            _ => None,
        };

        let mut session_file = None;
        let token = match &self.token_file {
            Some(path) => Some(read_token_file(path)?),
            None => std::env::var("KCA_TOKEN")
                .ok()
                .and_then(|t| Token::new(&t))
                .or_else(|| file.token.as_deref().and_then(Token::new))
                // Last, the session `kca login` stored for this server.
                .or_else(|| {
                    let (token, path) = session_token(named.map(PathBuf::as_path), &url)?;
                    session_file = Some(path);
                    Some(token)
                }),
        };
        let explicit_config = match named {
            Some(path) => Some(absolute(path)?),
            None => None,
        };
        Ok(Settings { url, cacert, token, explicit_config, session_file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_https_or_loopback_http() {
        assert!(parse_server_url("https://kca.example.com:8443").is_ok());
        assert!(parse_server_url("http://127.0.0.1:8443").is_ok());
        assert!(parse_server_url("http://localhost:8443").is_ok());
        assert!(parse_server_url("http://kca.example.com").is_err());
        assert!(parse_server_url("ftp://kca.example.com").is_err());
        assert!(parse_server_url("kca.example.com").is_err());
    }

    #[test]
    fn a_token_never_prints() {
        let token = Token::new(" secret\n").unwrap();
        assert_eq!(token.expose(), "secret");
        assert_eq!(format!("{token:?}"), "Token(***)");
        assert!(Token::new("  \n").is_none());
    }

    #[test]
    fn a_config_file_parse_error_does_not_quote_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "url: https://x\ntoken: [secret-token-value\n").unwrap();
        let err = read_config(&path, true).unwrap_err().to_string();
        assert!(!err.contains("secret-token-value"), "{err}");
    }
}
