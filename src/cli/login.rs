//! `kca login` and `kca logout`: single sign-on for the CLI. kca runs the device authorization
//! grant with the identity provider (the CLI talks to kca only); the session token it answers
//! is kept in the config directory (`session.json`, mode 0600), used when no other token is
//! given, and renewed by signing in again when it is close to its end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::client::{Client, ClientError};
use super::output::write_private_file;
use super::settings::{ConnectionArgs, Settings, Token};

/// Longest a `kca login` waits for the person to approve.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(900);

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  kca login --url https://kca.example.com && kca kubeconfig prod -o ~/.kube/prod.yaml"
)]
pub struct LoginArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// The stored session (one per config directory and server).
#[derive(Serialize, Deserialize)]
pub struct StoredSession {
    pub url: String,
    pub token: String,
    pub subject: String,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Where the session of the config file at `config` (or the default one) is kept.
pub fn session_path(explicit_config: Option<&Path>) -> Option<PathBuf> {
    let config = match explicit_config {
        Some(path) => path.to_path_buf(),
        None => super::settings::default_config_path()?,
    };
    Some(config.parent()?.join("session.json"))
}

/// The stored session for `url`, if one is there and has not expired.
pub fn load_session(path: &Path, url: &url::Url, now: OffsetDateTime) -> Option<StoredSession> {
    let text = std::fs::read_to_string(path).ok()?;
    let session: StoredSession = serde_json::from_str(&text).ok()?;
    (session.url == url.as_str() && session.expires_at > now).then_some(session)
}

#[derive(Deserialize)]
struct DeviceStart {
    handle: String,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: Option<String>,
    interval: u64,
}

#[derive(Deserialize)]
struct DeviceAnswer {
    status: String,
    interval: Option<u64>,
    token: Option<String>,
    subject: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
}

pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let mut settings = args.connection.resolve()?;
    // The device grant needs no token; a stored one must not be sent along.
    settings.token = None;
    let path = session_path(settings.explicit_config.as_deref())
        .context("no config directory: set HOME, XDG_CONFIG_HOME or --config")?;
    let client = Client::new(&settings)?;
    let started: Result<DeviceStart, ClientError> =
        client.json(client.maybe_authorized(Method::POST, &["v1", "auth", "device"])).await;
    let start = match started {
        Ok(start) => start,
        // The provider has no device grant: a loopback redirect with PKCE, as kubelogin does.
        Err(ClientError::Problem { problem, .. })
            if problem.rule.as_deref() == Some("device_grant_unavailable") =>
        {
            let answer = loopback_sign_in(&client).await?;
            return save_session(&settings, &path, answer);
        }
        Err(err) => return Err(anyhow::Error::new(err).context("starting the sign-in")),
    };
    match &start.verification_uri_complete {
        Some(complete) => eprintln!(
            "kca: to sign in, open {complete}\nkca: (or open {} and enter the code {})",
            start.verification_uri, start.user_code
        ),
        None => eprintln!(
            "kca: to sign in, open {} and enter the code {}",
            start.verification_uri, start.user_code
        ),
    }
    let started = std::time::Instant::now();
    let mut interval = start.interval.max(1);
    loop {
        if started.elapsed() > LOGIN_TIMEOUT {
            bail!("the sign-in was not approved in time; run kca login again");
        }
        tokio::time::sleep(Duration::from_secs(interval)).await;
        let request = client
            .maybe_authorized(Method::POST, &["v1", "auth", "device", "token"])
            .json(&serde_json::json!({"handle": start.handle}));
        let answer: DeviceAnswer = client.json(request).await.context("waiting for the sign-in")?;
        if answer.status == "pending" {
            interval = answer.interval.unwrap_or(interval).max(1);
            continue;
        }
        return save_session(&settings, &path, answer);
    }
}

fn save_session(settings: &Settings, path: &Path, answer: DeviceAnswer) -> anyhow::Result<()> {
    let (Some(token), Some(subject), Some(expires_at)) = (answer.token, answer.subject, answer.expires_at)
    else {
        bail!("kca answered a sign-in without a session");
    };
    let session = StoredSession {
        url: settings.url.as_str().to_string(),
        token,
        subject,
        issued_at: OffsetDateTime::now_utc(),
        expires_at,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_private_file(path, serde_json::to_string_pretty(&session)?.as_bytes())?;
    eprintln!(
        "kca: signed in as {} until {} (session kept in {})",
        session.subject,
        session.expires_at.format(&time::format_description::well_known::Rfc3339)?,
        path.display()
    );
    Ok(())
}

/// Sign in through a browser when the provider has no device grant: kca's `/auth/login` sends
/// the browser back to a listener on a loopback port here with a one-time code, which only this
/// process can redeem (it holds the PKCE verifier).
async fn loopback_sign_in(client: &Client) -> anyhow::Result<DeviceAnswer> {
    let listener =
        tokio::net::TcpListener::bind("127.0.0.1:0").await.context("listening on a loopback port")?;
    let callback = format!("http://127.0.0.1:{}/callback", listener.local_addr()?.port());
    let verifier = crate::oidc::random_text(48);
    let mut url = client.url(&["auth", "login"]);
    url.query_pairs_mut()
        .append_pair("cli_callback", &callback)
        .append_pair("cli_challenge", &crate::oidc::pkce_challenge(&verifier));
    eprintln!(
        "kca: the identity provider has no device sign-in; open this in a browser on this machine:\n{url}"
    );
    let code = tokio::time::timeout(LOGIN_TIMEOUT, wait_for_code(&listener))
        .await
        .map_err(|_| anyhow::anyhow!("the sign-in was not completed in time; run kca login again"))??;
    let request = client
        .maybe_authorized(Method::POST, &["v1", "auth", "cli", "token"])
        .json(&serde_json::json!({"code": code, "verifier": verifier}));
    client.json(request).await.context("redeeming the sign-in")
}

/// Answer requests on the loopback listener until one brings the sign-in code.
async fn wait_for_code(listener: &tokio::net::TcpListener) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let (mut stream, _) = listener.accept().await?;
        let mut request = vec![0u8; 8192];
        let mut read = 0;
        // The request line and headers are enough to find the code.
        while read < request.len() {
            let n = stream.read(&mut request[read..]).await?;
            if n == 0 {
                break;
            }
            read += n;
            if request[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let text = String::from_utf8_lossy(&request[..read]).to_string();
        let target = text.split_whitespace().nth(1).unwrap_or_default();
        let code = url::Url::parse(&format!("http://127.0.0.1{target}"))
            .ok()
            .filter(|u| u.path() == "/callback")
            .and_then(|u| u.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.to_string()));
        let (status, body) = match &code {
            Some(_) => ("200 OK", "Signed in to kca. You may close this window and go back to the terminal."),
            None => ("404 Not Found", "Not the kca sign-in."),
        };
        let page = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(page.as_bytes()).await;
        let _ = stream.shutdown().await;
        if let Some(code) = code {
            return Ok(code);
        }
    }
}

pub async fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    let mut settings = args.connection.resolve()?;
    let path = session_path(settings.explicit_config.as_deref()).context("no config directory")?;
    let Some(session) = load_session(&path, &settings.url, OffsetDateTime::now_utc()) else {
        let _ = std::fs::remove_file(&path);
        eprintln!("kca: not signed in to {}", settings.url);
        return Ok(());
    };
    settings.token = Token::new(&session.token);
    let client = Client::new(&settings)?;
    let result = client.send(client.authorized(Method::POST, &["auth", "logout"])?).await;
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    match result {
        Ok(_) => eprintln!("kca: signed out; the session of {} is revoked", session.subject),
        // Already revoked or expired: nothing is left to end.
        Err(err) if err.status().is_some_and(|s| s == reqwest::StatusCode::UNAUTHORIZED) => {
            eprintln!("kca: signed out (the session had already ended)")
        }
        Err(err) => {
            return Err(anyhow::Error::new(err).context("revoking the session (the local copy is removed)"));
        }
    }
    Ok(())
}

/// Renew the stored session when less than half of its lifetime is left, so that a kubeconfig's
/// exec plugin keeps working through a working day; a renewal refused (the sign-in is too old,
/// the session was revoked) leaves the session as it is, with a word on stderr.
pub async fn refresh_if_due(settings: &mut Settings) {
    let Some(path) = settings.session_file.clone() else { return };
    let now = OffsetDateTime::now_utc();
    let Some(session) = load_session(&path, &settings.url, now) else { return };
    if session.expires_at - now > (session.expires_at - session.issued_at) / 2 {
        return;
    }
    let renewed = async {
        let client = Client::new(settings)?;
        let answer: DeviceAnswer =
            client.json(client.authorized(Method::POST, &["v1", "auth", "session", "refresh"])?).await?;
        let (Some(token), Some(subject), Some(expires_at)) =
            (answer.token, answer.subject, answer.expires_at)
        else {
            bail!("kca answered a renewal without a session");
        };
        let renewed = StoredSession { url: session.url.clone(), token, subject, issued_at: now, expires_at };
        write_private_file(&path, serde_json::to_string_pretty(&renewed)?.as_bytes())?;
        anyhow::Ok(renewed)
    };
    match renewed.await {
        Ok(renewed) => {
            eprintln!(
                "kca: session renewed until {}",
                renewed.expires_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
            );
            settings.token = Token::new(&renewed.token);
        }
        Err(err) => {
            eprintln!("kca: the session could not be renewed ({err}); run `kca login` before it ends")
        }
    }
}
