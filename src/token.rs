//! API tokens: EdDSA JWTs signed with keys kca keeps sealed in its database, so every replica and
//! `kca token create` on the server host share them without another secret to distribute.
//!
//! A token is accepted only when its signature, times, issuer and audience check out *and* it is
//! registered in the database and not revoked: every token can be listed and revoked, and a token
//! that was never minted by kca is refused even if it carries a valid signature. The signing key
//! can be rotated; each token names its key (`kid`), and a previous key keeps verifying until the
//! last token it signed has expired.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::keyring::KeyringError;
use crate::pki::seal::MasterKey;
use crate::pki::{KeyAlgorithm, SigningKeyPair};
pub use crate::scope::Scope;
use crate::store::{Store, StoreError, TokenKeyRecord, TokenRecord};

/// Where the first signing key lived before keys could be rotated; imported as key 1.
const LEGACY_SIGNING_KEY_SETTING: &str = "token_signing_key";
/// Verified tokens are remembered (by their SHA-256) up to this many, to skip re-verification.
const VERIFIED_CACHE_LIMIT: usize = 10_000;
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY_SECONDS: i64 = 30;

/// `clusters` entry of a token valid for every cluster.
pub const ALL_CLUSTERS: &str = "*";

/// The claims of a kca token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Claims {
    /// Who the token speaks for; recorded in the audit trail and on every certificate it issues.
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Token id: what lists and revocations name.
    pub jti: String,
    pub scopes: Vec<Scope>,
    /// Ids of the clusters this token may touch, or `*` for all. Ids, not names: a cluster deleted
    /// and created again under the same name is another cluster.
    pub clusters: Vec<String>,
    /// Glob patterns narrowing the groups this token may issue (on top of the cluster policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// Longest TTL in seconds this token may issue (on top of the cluster policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl: Option<u64>,
    /// Set on the session of a person signed in through single sign-on: who the identity
    /// provider says they are. Such a token issues only for that person, under the access rules
    /// of each cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<Person>,
}

/// A person as the identity provider asserted them at sign-in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Person {
    /// The provider (`iss` of the ID token).
    pub iss: String,
    /// The provider's id of the person (`sub` of the ID token).
    pub sub: String,
    /// Their Kubernetes user name: the username prefix and the username claim; the CN of every
    /// certificate they obtain.
    pub user: String,
    /// Their groups at the provider, matched against each cluster's access rules.
    pub idp_groups: Vec<String>,
    /// When they signed in at the provider (seconds since the epoch).
    pub auth_time: i64,
}

impl Claims {
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }

    pub fn is_admin(&self) -> bool {
        self.scopes.contains(&Scope::Admin)
    }

    pub fn allows_cluster(&self, id: Uuid) -> bool {
        self.clusters.iter().any(|c| c == ALL_CLUSTERS || Uuid::parse_str(c).is_ok_and(|c| c == id))
    }

    /// The cluster ids this token is limited to, or `None` for all.
    pub fn cluster_restriction(&self) -> Option<Vec<Uuid>> {
        if self.clusters.iter().any(|c| c == ALL_CLUSTERS) {
            None
        } else {
            Some(self.clusters.iter().filter_map(|c| Uuid::parse_str(c).ok()).collect())
        }
    }
}

/// What a new token asks for; clusters are ids (or `*`).
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub subject: String,
    pub scopes: Vec<Scope>,
    pub clusters: Vec<String>,
    pub groups: Option<Vec<String>>,
    pub max_ttl: Option<u64>,
    pub ttl: time::Duration,
    /// For a single sign-on session: the person it speaks for.
    pub person: Option<Person>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token: {0}")]
    Invalid(String),
    /// Signed with a key this replica does not know yet (another replica rotated it).
    #[error("invalid token: unknown signing key")]
    UnknownKey,
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct SigningKeys {
    current_id: i32,
    encoding: EncodingKey,
    decoding: HashMap<i32, DecodingKey>,
}

/// What this replica knows of a registered token.
#[derive(Clone, Copy, Debug)]
struct Registered {
    revoked: bool,
    expires_at: i64,
}

/// Mints and verifies tokens.
pub struct TokenService {
    keys: RwLock<SigningKeys>,
    validation: Validation,
    issuer: String,
    audience: String,
    max_lifetime: time::Duration,
    verified: Mutex<HashMap<[u8; 32], Arc<Claims>>>,
    registered: RwLock<HashMap<Uuid, Registered>>,
    /// When each token was last used, not yet written to the database.
    last_used: Mutex<HashMap<Uuid, OffsetDateTime>>,
}

impl TokenService {
    /// Load the token signing keys, creating and sealing the first on first start. Replicas
    /// starting at once race on the insert; the key that won is the one every replica uses.
    pub async fn load(
        store: &dyn Store,
        master: &MasterKey,
        issuer: &str,
        audience: &str,
        max_lifetime: std::time::Duration,
    ) -> Result<Self, TokenError> {
        let keys = load_keys(store, master, OffsetDateTime::now_utc()).await?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS as u64;
        Ok(Self {
            keys: RwLock::new(keys),
            validation,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            max_lifetime: time::Duration::try_from(max_lifetime)
                .map_err(|e| TokenError::Invalid(format!("maximum token lifetime: {e}")))?,
            verified: Mutex::new(HashMap::new()),
            registered: RwLock::new(HashMap::new()),
            last_used: Mutex::new(HashMap::new()),
        })
    }

    /// The longest lifetime a token may have.
    pub fn max_lifetime(&self) -> time::Duration {
        self.max_lifetime
    }

    /// Re-read the signing keys (after a rotation, here or on another replica).
    pub async fn reload_keys(&self, store: &dyn Store, master: &MasterKey) -> Result<(), TokenError> {
        let keys = load_keys(store, master, OffsetDateTime::now_utc()).await?;
        *self.keys.write() = keys;
        Ok(())
    }

    /// Make a new signing key the current one; tokens signed by the previous keys keep verifying
    /// until they expire. Answers the new key's id.
    pub async fn rotate_key(
        &self,
        store: &dyn Store,
        master: &MasterKey,
        audit: impl FnOnce(i32) -> crate::store::AuditEntry,
    ) -> Result<i32, TokenError> {
        let next = self.keys.read().current_id + 1;
        let (_, pkcs8) = SigningKeyPair::generate(KeyAlgorithm::Ed25519).map_err(KeyringError::from)?;
        let sealed = master.seal(&pkcs8, &crate::keyring::token_key_aad(next)).map_err(KeyringError::from)?;
        let audit = audit(next);
        store.insert_token_key(next, &sealed, master.version(), audit.at, Some(&audit)).await?;
        self.reload_keys(store, master).await?;
        Ok(next)
    }

    /// Sign a token for `request`; answers the token and the record to register it with.
    pub fn mint(
        &self,
        request: &TokenRequest,
        created_by: &str,
        now: OffsetDateTime,
    ) -> Result<(String, TokenRecord), TokenError> {
        if request.subject.trim().is_empty() || request.subject.chars().any(char::is_control) {
            return Err(TokenError::Invalid("the subject must be non-empty printable text".into()));
        }
        if request.ttl <= time::Duration::ZERO || request.ttl > self.max_lifetime {
            return Err(TokenError::Invalid(format!(
                "the token lifetime must be between 1 second and {} seconds",
                self.max_lifetime.whole_seconds()
            )));
        }
        let now = now.replace_nanosecond(0).expect("0 is a valid nanosecond");
        let id = Uuid::new_v4();
        let claims = Claims {
            sub: request.subject.clone(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now.unix_timestamp(),
            nbf: Some(now.unix_timestamp()),
            exp: (now + request.ttl).unix_timestamp(),
            jti: id.to_string(),
            scopes: request.scopes.clone(),
            clusters: request.clusters.clone(),
            groups: request.groups.clone(),
            max_ttl: request.max_ttl,
            person: request.person.clone(),
        };
        let keys = self.keys.read();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(keys.current_id.to_string());
        let token = jsonwebtoken::encode(&header, &claims, &keys.encoding)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let record = TokenRecord {
            id,
            subject: claims.sub,
            scopes: claims.scopes,
            clusters: claims.clusters,
            groups: claims.groups,
            max_ttl: claims.max_ttl,
            key_id: keys.current_id,
            created_by: created_by.to_string(),
            created_at: now,
            expires_at: now + request.ttl,
            last_used_at: None,
            revoked_at: None,
        };
        Ok((token, record))
    }

    /// Check signature (EdDSA only: `alg: none` or HS256 are refused), `exp`, `nbf`, `iat`, `iss`,
    /// `aud`, a non-empty `sub` and the lifetime bound. Registration is checked by
    /// [`registration`](Self::registration).
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Result<Arc<Claims>, TokenError> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let cache_key: [u8; 32] = digest.as_ref().try_into().expect("SHA-256 is 32 bytes");
        if let Some(claims) = self.verified.lock().get(&cache_key)
            && claims.exp > now.unix_timestamp()
        {
            return Ok(Arc::clone(claims));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid("malformed".into()))?;
        // Tokens minted before keys could be rotated carry no kid: they were signed by key 1.
        let key_id: i32 = match header.kid.as_deref() {
            None => 1,
            Some(kid) => kid.parse().map_err(|_| TokenError::Invalid("malformed key id".into()))?,
        };
        let data = {
            let keys = self.keys.read();
            let decoding = keys.decoding.get(&key_id).ok_or(TokenError::UnknownKey)?;
            jsonwebtoken::decode::<Claims>(token, decoding, &self.validation).map_err(|e| {
                TokenError::Invalid(match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => "expired".to_string(),
                    jsonwebtoken::errors::ErrorKind::ImmatureSignature => "not valid yet (nbf)".to_string(),
                    jsonwebtoken::errors::ErrorKind::InvalidAudience => "wrong audience".to_string(),
                    jsonwebtoken::errors::ErrorKind::InvalidIssuer => "wrong issuer".to_string(),
                    jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => "algorithm not accepted".to_string(),
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => "bad signature".to_string(),
                    jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(claim) => {
                        format!("missing claim {claim}")
                    }
                    _ => "malformed".to_string(),
                })
            })?
        };
        let claims = data.claims;
        if claims.sub.trim().is_empty() {
            return Err(TokenError::Invalid("empty subject".into()));
        }
        if claims.iat > now.unix_timestamp() + LEEWAY_SECONDS {
            return Err(TokenError::Invalid("issued in the future (iat)".into()));
        }
        if claims.exp - claims.iat > self.max_lifetime.whole_seconds() {
            return Err(TokenError::Invalid(format!(
                "lives longer than the maximum token lifetime ({} seconds)",
                self.max_lifetime.whole_seconds()
            )));
        }
        if Uuid::parse_str(&claims.jti).is_err() {
            return Err(TokenError::Invalid("malformed token id (jti)".into()));
        }
        let mut cache = self.verified.lock();
        if cache.len() >= VERIFIED_CACHE_LIMIT {
            let now = now.unix_timestamp();
            cache.retain(|_, c| c.exp > now);
            if cache.len() >= VERIFIED_CACHE_LIMIT {
                cache.clear();
            }
        }
        let claims = Arc::new(claims);
        cache.insert(cache_key, Arc::clone(&claims));
        Ok(claims)
    }

    /// Whether the verified token `claims` is registered and not revoked: `Some(true)` yes,
    /// `Some(false)` revoked, `None` not known to this replica yet (look it up).
    pub fn registration(&self, claims: &Claims) -> Option<bool> {
        let id = Uuid::parse_str(&claims.jti).ok()?;
        self.registered.read().get(&id).map(|r| !r.revoked)
    }

    /// Remember a token read from (or written to) the database.
    pub fn remember(&self, record: &TokenRecord) {
        self.registered.write().insert(
            record.id,
            Registered {
                revoked: record.revoked_at.is_some(),
                expires_at: record.expires_at.unix_timestamp(),
            },
        );
    }

    /// A token was revoked (here, or on another replica).
    pub fn forget(&self, id: Uuid) {
        let mut registered = self.registered.write();
        registered.entry(id).or_insert(Registered { revoked: true, expires_at: i64::MAX }).revoked = true;
    }

    /// Mark revoked every token in `revoked`, and drop what has expired.
    pub fn apply_revocations(&self, revoked: &[Uuid], now: OffsetDateTime) {
        for id in revoked {
            self.forget(*id);
        }
        let now = now.unix_timestamp();
        self.registered.write().retain(|_, r| r.expires_at > now);
    }

    /// Note a use of a token; written to the database by [`flush_last_used`](Self::flush_last_used).
    pub fn used(&self, claims: &Claims, now: OffsetDateTime) {
        if let Ok(id) = Uuid::parse_str(&claims.jti) {
            self.last_used.lock().insert(id, now);
        }
    }

    /// Write the noted uses to the database.
    pub async fn flush_last_used(&self, store: &dyn Store) -> Result<(), StoreError> {
        let pending: Vec<(Uuid, OffsetDateTime)> =
            std::mem::take(&mut *self.last_used.lock()).into_iter().collect();
        if pending.is_empty() {
            return Ok(());
        }
        store.touch_tokens(&pending).await
    }
}

/// The keys that verify: the newest (which signs) and every older one that signed a token still
/// unexpired. The first start creates key 1, or imports the key kept before rotation existed.
async fn load_keys(
    store: &dyn Store,
    master: &MasterKey,
    now: OffsetDateTime,
) -> Result<SigningKeys, TokenError> {
    let mut records = store.list_token_keys().await?;
    if records.is_empty() {
        let sealed = match store.get_setting(LEGACY_SIGNING_KEY_SETTING).await? {
            Some(sealed) => sealed,
            None => {
                let (_, pkcs8) =
                    SigningKeyPair::generate(KeyAlgorithm::Ed25519).map_err(KeyringError::from)?;
                master.seal(&pkcs8, &crate::keyring::token_key_aad(1)).map_err(KeyringError::from)?
            }
        };
        match store.insert_token_key(1, &sealed, master.version(), now, None).await {
            Ok(()) | Err(StoreError::Conflict(_)) => {}
            Err(err) => return Err(err.into()),
        }
        records = store.list_token_keys().await?;
    }
    let current_id =
        records.iter().map(|r| r.id).max().ok_or_else(|| TokenError::Invalid("no signing key".into()))?;
    let mut encoding = None;
    let mut decoding = HashMap::new();
    for record in &records {
        let live = record.id == current_id || record.last_token_expiry.is_some_and(|at| at > now);
        if !live {
            continue;
        }
        let (key, pkcs8) = open_key(record, master)?;
        decoding.insert(record.id, DecodingKey::from_ed_der(rcgen::PublicKeyData::der_bytes(&key)));
        if record.id == current_id {
            encoding = Some(EncodingKey::from_ed_der(&pkcs8));
        }
    }
    let encoding = encoding.ok_or_else(|| TokenError::Invalid("no signing key".into()))?;
    Ok(SigningKeys { current_id, encoding, decoding })
}

fn open_key(
    record: &TokenKeyRecord,
    master: &MasterKey,
) -> Result<(SigningKeyPair, zeroize::Zeroizing<Vec<u8>>), TokenError> {
    let pkcs8 = crate::keyring::open_sealed(
        master,
        &record.sealed_key,
        record.key_version,
        record.previous_seal.as_ref(),
        &crate::keyring::token_key_aad(record.id),
    )?;
    let key = SigningKeyPair::from_pkcs8(KeyAlgorithm::Ed25519, &pkcs8).map_err(KeyringError::from)?;
    Ok((key, pkcs8))
}
