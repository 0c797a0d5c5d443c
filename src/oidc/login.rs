//! What a sign-in carries between its start and its end, sealed under the master key so that any
//! replica can finish what another started and no browser or CLI can read or alter it; and how
//! the provider's claims become a person.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::OidcSettings;
use super::id_token::IdClaims;
use crate::names::validate_identity;
use crate::pki::seal::MasterKey;
use crate::token::Person;

/// How long a browser sign-in may take at the provider.
pub const LOGIN_TTL_SECONDS: i64 = 600;
/// Most groups kept of a person's groups claim.
const MAX_IDP_GROUPS: usize = 256;

const LOGIN_AAD: &[u8] = b"kca:oidc-login";
const DEVICE_AAD: &[u8] = b"kca:oidc-device";
const CLI_CODE_AAD: &[u8] = b"kca:oidc-cli-code";
/// How long the CLI has to redeem the code of a loopback sign-in.
pub const CLI_CODE_TTL_SECONDS: i64 = 120;

/// A browser sign-in in progress (the `kca_login` cookie).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginState {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    /// Where the browser returns afterwards: a path of this origin.
    pub return_to: String,
    pub redirect_uri: String,
    pub expires_at: i64,
    /// Set when `kca login` started the sign-in with a loopback redirect (the provider offers no
    /// device grant): where to send the browser afterwards, and the CLI's PKCE challenge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cli: Option<CliLogin>,
}

/// The loopback end of a `kca login` sign-in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CliLogin {
    pub callback: String,
    pub challenge: String,
}

/// What the browser carries back to `kca login`'s loopback listener: the person, bound to the
/// CLI's PKCE challenge, redeemed once for a session (`POST /v1/auth/cli/token`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CliCode {
    pub id: String,
    pub person: Person,
    pub challenge: String,
    pub expires_at: i64,
}

impl Expiring for CliCode {
    fn expires_at(&self) -> i64 {
        self.expires_at
    }
}

impl CliCode {
    pub fn seal(&self, master: &MasterKey) -> String {
        seal(master, self, CLI_CODE_AAD)
    }

    pub fn open(master: &MasterKey, text: &str, now: i64) -> Option<Self> {
        open(master, text, CLI_CODE_AAD, now)
    }
}

/// A `kca login` loopback callback: `http://127.0.0.1:<port>/…` (or `[::1]`, `localhost`), with
/// no query, fragment or credentials. Anything else would make kca an open redirect.
pub fn loopback_callback(text: &str) -> Option<String> {
    let url = url::Url::parse(text).ok()?;
    let loopback = match url.host()? {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
        url::Host::Domain(name) => name == "localhost",
    };
    let plain = url.scheme() == "http"
        && url.port().is_some()
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    (loopback && plain).then(|| url.to_string())
}

/// A device sign-in in progress (the handle `kca login` polls with).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceState {
    pub device_code: String,
    pub expires_at: i64,
}

fn seal<T: Serialize>(master: &MasterKey, value: &T, aad: &[u8]) -> String {
    let plain = zeroize::Zeroizing::new(serde_json::to_vec(value).expect("serializes"));
    URL_SAFE_NO_PAD.encode(master.seal(&plain, aad).expect("sealing with the master key works"))
}

fn open<T: serde::de::DeserializeOwned + Expiring>(
    master: &MasterKey,
    text: &str,
    aad: &[u8],
    now: i64,
) -> Option<T> {
    let sealed = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
    let plain = master.open(&sealed, aad).ok()?;
    let value: T = serde_json::from_slice(&plain).ok()?;
    (value.expires_at() > now).then_some(value)
}

pub trait Expiring {
    fn expires_at(&self) -> i64;
}

impl Expiring for LoginState {
    fn expires_at(&self) -> i64 {
        self.expires_at
    }
}

impl Expiring for DeviceState {
    fn expires_at(&self) -> i64 {
        self.expires_at
    }
}

impl LoginState {
    pub fn seal(&self, master: &MasterKey) -> String {
        seal(master, self, LOGIN_AAD)
    }

    /// The state of a sealed cookie, unless altered, sealed by another master key, or expired.
    pub fn open(master: &MasterKey, text: &str, now: i64) -> Option<Self> {
        open(master, text, LOGIN_AAD, now)
    }
}

impl DeviceState {
    pub fn seal(&self, master: &MasterKey) -> String {
        seal(master, self, DEVICE_AAD)
    }

    pub fn open(master: &MasterKey, text: &str, now: i64) -> Option<Self> {
        open(master, text, DEVICE_AAD, now)
    }
}

/// A same-origin path to return to after sign-in: `/` unless `wanted` is an absolute path with
/// no scheme, authority or backslash trick (an open redirect otherwise).
pub fn safe_return_path(wanted: Option<&str>) -> String {
    match wanted {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && path.len() <= 512
                && !path.chars().any(|c| c.is_control() || c == '\\') =>
        {
            path.to_string()
        }
        _ => "/".to_string(),
    }
}

/// The person the provider's claims describe: user = prefix + username claim, checked like any
/// other Kubernetes user name; groups kept only when printable.
pub fn person(settings: &OidcSettings, claims: &IdClaims, now: i64) -> Result<Person, String> {
    let name = claims.string(&settings.username_claim).filter(|n| !n.is_empty()).ok_or_else(|| {
        format!("the identity provider did not send the {:?} claim that names you", settings.username_claim)
    })?;
    if settings.username_claim == "email"
        && claims.claims.get("email_verified") == Some(&serde_json::Value::Bool(false))
    {
        return Err("your e-mail address is not verified at the identity provider".into());
    }
    let user = format!("{}{name}", settings.username_prefix);
    validate_identity("user", &user)
        .map_err(|e| format!("your user name cannot be used: it {}", e.detail))?;
    if crate::names::is_privileged_user(&user) {
        return Err("your user name is reserved for Kubernetes components".into());
    }
    let idp_groups = claims
        .strings(&settings.groups_claim)
        .into_iter()
        .filter(|g| !g.is_empty() && g.chars().count() <= 256 && !g.chars().any(char::is_control))
        .take(MAX_IDP_GROUPS)
        .collect();
    let auth_time = claims.claims.get("auth_time").and_then(serde_json::Value::as_i64).unwrap_or(now);
    Ok(Person {
        iss: claims.issuer.clone(),
        sub: claims.subject.chars().take(256).collect(),
        user,
        idp_groups,
        auth_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OidcArgs;

    fn settings() -> OidcSettings {
        OidcSettings::from_args(&OidcArgs {
            issuer: Some("https://idp.example".into()),
            client_id: Some("kca".into()),
            ..Default::default()
        })
        .unwrap()
        .unwrap()
    }

    fn claims(value: serde_json::Value) -> IdClaims {
        IdClaims {
            issuer: "https://idp.example".into(),
            subject: "u-1".into(),
            claims: value.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn only_loopback_callbacks_are_accepted_for_the_cli() {
        assert!(loopback_callback("http://127.0.0.1:41234/callback").is_some());
        assert!(loopback_callback("http://[::1]:41234/callback").is_some());
        for bad in [
            "https://evil.example:443/callback",
            "http://evil.example:80/",
            "http://127.0.0.1/callback",
            "http://127.0.0.1:1/callback?x=1",
            "http://user@127.0.0.1:1/",
            "javascript:alert(1)",
        ] {
            assert!(loopback_callback(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn only_same_origin_paths_are_returned_to() {
        assert_eq!(safe_return_path(Some("/#/clusters/prod")), "/#/clusters/prod");
        for bad in ["//evil.example", "https://evil.example", "/\\evil.example", "evil", "/a\nb", "\\\\x"] {
            assert_eq!(safe_return_path(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_return_path(None), "/");
    }

    #[test]
    fn hostile_claims_do_not_become_identities() {
        let s = settings();
        let p = person(
            &s,
            &claims(serde_json::json!({"email": "alice@example.com", "groups": ["dev", "a\nb"]})),
            5,
        )
        .unwrap();
        assert_eq!(p.user, "oidc:alice@example.com");
        assert_eq!(p.idp_groups, ["dev"]);
        for bad in ["alice\r\nX-Remote-User: admin", "a,b@example.com", "alice\u{200B}@example.com", ""] {
            assert!(person(&s, &claims(serde_json::json!({"email": bad})), 5).is_err(), "{bad:?}");
        }
        assert!(person(&s, &claims(serde_json::json!({"name": "alice"})), 5).is_err());
        let unverified = serde_json::json!({"email": "alice@example.com", "email_verified": false});
        assert!(person(&s, &claims(unverified), 5).is_err());
    }

    #[test]
    fn sealed_states_open_only_unaltered_and_unexpired() {
        let (master, _) = MasterKey::generate().unwrap();
        let state = LoginState {
            state: "s".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            return_to: "/".into(),
            redirect_uri: "https://kca/auth/callback".into(),
            expires_at: 100,
            cli: None,
        };
        let sealed = state.seal(&master);
        assert_eq!(LoginState::open(&master, &sealed, 50).unwrap().nonce, "n");
        assert!(LoginState::open(&master, &sealed, 100).is_none(), "expired");
        assert!(DeviceState::open(&master, &sealed, 50).is_none(), "a login state is no device handle");
        let (other, _) = MasterKey::generate().unwrap();
        assert!(LoginState::open(&other, &sealed, 50).is_none());
        let mut altered = sealed.into_bytes();
        altered[10] = if altered[10] == b'A' { b'B' } else { b'A' };
        assert!(LoginState::open(&master, &String::from_utf8(altered).unwrap(), 50).is_none());
    }
}
