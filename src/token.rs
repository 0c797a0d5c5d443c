//! API tokens: EdDSA JWTs signed with a key kca keeps sealed in its database, so every replica and
//! `kca token create` on the server host share it without another secret to distribute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::keyring::{Keyring, KeyringError};
use crate::pki::{KeyAlgorithm, SigningKeyPair};
use crate::store::Store;

const SIGNING_KEY_SETTING: &str = "token_signing_key";
const SIGNING_KEY_AAD: &[u8] = b"kca:token-signing-key";
/// Verified tokens are remembered (by their SHA-256) up to this many, to skip re-verification.
const VERIFIED_CACHE_LIMIT: usize = 10_000;

/// What a token allows. `admin` allows everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum Scope {
    #[serde(rename = "admin")]
    Admin,
    #[serde(rename = "clusters:write")]
    ClustersWrite,
    #[serde(rename = "kubeconfigs:issue")]
    KubeconfigsIssue,
    #[serde(rename = "certificates:issue")]
    CertificatesIssue,
    #[serde(rename = "certificates:revoke")]
    CertificatesRevoke,
    #[serde(rename = "read")]
    Read,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::Admin,
        Scope::ClustersWrite,
        Scope::KubeconfigsIssue,
        Scope::CertificatesIssue,
        Scope::CertificatesRevoke,
        Scope::Read,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::ClustersWrite => "clusters:write",
            Scope::KubeconfigsIssue => "kubeconfigs:issue",
            Scope::CertificatesIssue => "certificates:issue",
            Scope::CertificatesRevoke => "certificates:revoke",
            Scope::Read => "read",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// The claims of a kca token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Claims {
    /// Who the token speaks for; recorded in the audit trail and on every certificate it issues.
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    /// Token id.
    pub jti: String,
    pub scopes: Vec<Scope>,
    /// Cluster names this token may touch; `*` for all.
    pub clusters: Vec<String>,
    /// Glob patterns narrowing the groups this token may issue (on top of the cluster policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// Longest TTL in seconds this token may issue (on top of the cluster policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl: Option<u64>,
}

impl Claims {
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }

    pub fn allows_cluster(&self, name: &str) -> bool {
        self.clusters.iter().any(|c| c == "*" || c == name)
    }

    /// The cluster names this token is limited to, or `None` for all.
    pub fn cluster_restriction(&self) -> Option<&[String]> {
        if self.clusters.iter().any(|c| c == "*") { None } else { Some(&self.clusters) }
    }
}

/// What `kca token create` asks for.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub subject: String,
    pub scopes: Vec<Scope>,
    pub clusters: Vec<String>,
    pub groups: Option<Vec<String>>,
    pub max_ttl: Option<u64>,
    pub ttl: time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

/// Mints and verifies tokens.
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    verified: Mutex<HashMap<[u8; 32], Arc<Claims>>>,
}

impl TokenService {
    /// Load the token signing key, creating and sealing it on first start. Replicas starting at
    /// once race on the insert; the value that won is the one every replica uses.
    pub async fn load(
        store: &dyn Store,
        keyring: &Keyring,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, TokenError> {
        let sealed = match store.get_setting(SIGNING_KEY_SETTING).await.map_err(KeyringError::from)? {
            Some(sealed) => sealed,
            None => {
                let (_, pkcs8) =
                    SigningKeyPair::generate(KeyAlgorithm::Ed25519).map_err(KeyringError::from)?;
                let sealed = keyring.master().seal(&pkcs8, SIGNING_KEY_AAD).map_err(KeyringError::from)?;
                store
                    .insert_setting_if_absent(SIGNING_KEY_SETTING, &sealed)
                    .await
                    .map_err(KeyringError::from)?
            }
        };
        let pkcs8 =
            keyring.master().open(&sealed, SIGNING_KEY_AAD).map_err(|_| KeyringError::WrongMasterKey)?;
        let key = SigningKeyPair::from_pkcs8(KeyAlgorithm::Ed25519, &pkcs8).map_err(KeyringError::from)?;
        let public_key = rcgen::PublicKeyData::der_bytes(&key).to_vec();

        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        Ok(Self {
            encoding: EncodingKey::from_ed_der(&pkcs8),
            decoding: DecodingKey::from_ed_der(&public_key),
            validation,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            verified: Mutex::new(HashMap::new()),
        })
    }

    pub fn mint(&self, request: &TokenRequest, now: OffsetDateTime) -> Result<String, TokenError> {
        let claims = Claims {
            sub: request.subject.clone(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now.unix_timestamp(),
            exp: (now + request.ttl).unix_timestamp(),
            jti: uuid::Uuid::new_v4().to_string(),
            scopes: request.scopes.clone(),
            clusters: request.clusters.clone(),
            groups: request.groups.clone(),
            max_ttl: request.max_ttl,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.encoding)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// Verify signature (EdDSA only: `alg: none` or HS256 are refused), `exp`, `iss` and `aud`.
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Result<Arc<Claims>, TokenError> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let key: [u8; 32] = digest.as_ref().try_into().expect("SHA-256 is 32 bytes");
        if let Some(claims) = self.verified.lock().expect("token cache lock").get(&key)
            && claims.exp > now.unix_timestamp()
        {
            return Ok(Arc::clone(claims));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            TokenError::Invalid(match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "expired".to_string(),
                jsonwebtoken::errors::ErrorKind::InvalidAudience => "wrong audience".to_string(),
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => "wrong issuer".to_string(),
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => "algorithm not accepted".to_string(),
                jsonwebtoken::errors::ErrorKind::InvalidSignature => "bad signature".to_string(),
                jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(claim) => {
                    format!("missing claim {claim}")
                }
                _ => "malformed".to_string(),
            })
        })?;
        let mut cache = self.verified.lock().expect("token cache lock");
        if cache.len() >= VERIFIED_CACHE_LIMIT {
            let now = now.unix_timestamp();
            cache.retain(|_, c| c.exp > now);
            if cache.len() >= VERIFIED_CACHE_LIMIT {
                cache.clear();
            }
        }
        let claims = Arc::new(data.claims);
        cache.insert(key, Arc::clone(&claims));
        Ok(claims)
    }
}
