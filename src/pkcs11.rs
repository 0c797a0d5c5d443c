//! CA keys in a PKCS#11 token (`KCA_PKCS11_MODULE`, `KCA_PKCS11_TOKEN_LABEL`,
//! `KCA_PKCS11_PIN_FILE`): generated inside the token as sensitive, non-extractable objects, and
//! used there through a pool of sessions that share one login, so signatures are not serialised
//! on one session.
//!
//! The module is loaded, the token found and the user logged in when first needed, and again
//! after the token went away: a token that is absent, or refuses the PIN, makes signing fail with
//! [`PkiError::KeyUnavailable`] (issuance answers 503) and is logged at warn at most once a
//! minute. A refused PIN is not presented again until the PIN file changes, so kca never locks
//! the token's PIN by retrying it. Every call blocks: callers run them off the async workers.

use std::path::PathBuf;
use std::sync::Arc;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use parking_lot::Mutex;
use zeroize::Zeroizing;

use crate::pki::keys::ecdsa_signature_to_der;
use crate::pki::{CaKey, KeyAlgorithm, PkiError};
use crate::ratelimit::WarnEvery;

/// Where the token is and how to log in to it.
#[derive(Clone, Debug)]
pub struct Pkcs11Config {
    pub module: PathBuf,
    pub token_label: String,
    pub pin_file: PathBuf,
}

/// Why the token cannot do what was asked. Never carries the PIN.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot load the PKCS#11 module {module}: {detail}")]
    Module { module: String, detail: String },
    #[error("no token labelled {0:?} is present")]
    Absent(String),
    #[error("cannot read KCA_PKCS11_PIN_FILE {0}")]
    PinFile(String),
    #[error(
        "the token refused the PIN in KCA_PKCS11_PIN_FILE; it is not presented again until that file changes"
    )]
    PinRefused,
    #[error("the token's PIN is locked")]
    PinLocked,
    #[error("the key {0:?} is not in the token")]
    KeyNotFound(String),
    #[error("key algorithm {0} cannot be kept in a PKCS#11 token (p256 and p384 can)")]
    Unsupported(KeyAlgorithm),
    #[error("PKCS#11: {0}")]
    Device(String),
}

/// The most sessions kept open while idle; more are opened when more signatures run at once.
const MAX_IDLE_SESSIONS: usize = 16;

struct Pooled {
    epoch: u64,
    session: Session,
}

#[derive(Default)]
struct State {
    context: Option<Pkcs11>,
    slot: Option<Slot>,
    /// Incremented when the token went away: sessions and object handles of an older epoch are
    /// not used again.
    epoch: u64,
    /// SHA-256 of the PIN the token refused, so it is not presented again.
    refused_pin: Option<Vec<u8>>,
}

/// The configured token: the loaded module, the slot holding the token, and idle sessions.
pub struct Token {
    config: Pkcs11Config,
    state: Mutex<State>,
    idle: Mutex<Vec<Pooled>>,
    warned: Mutex<WarnEvery>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("module", &self.config.module)
            .field("token_label", &self.config.token_label)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// A token to be reached on first use.
    pub fn new(config: Pkcs11Config) -> Arc<Self> {
        Arc::new(Self {
            config,
            state: Mutex::new(State::default()),
            idle: Mutex::new(Vec::new()),
            warned: Mutex::new(WarnEvery::default()),
        })
    }

    pub fn label(&self) -> &str {
        &self.config.token_label
    }

    /// Reach the token and log in now (at startup: a token that is away is reported, and the
    /// server starts all the same).
    pub fn connect(&self) -> Result<(), TokenError> {
        self.with_session(|_, _| Ok(())).map_err(|e| self.reported(e))
    }

    /// Generate an EC key pair inside the token under `reference` (its CKA_LABEL and CKA_ID):
    /// the private key sensitive, not extractable, private and kept in the token.
    pub fn generate(
        self: &Arc<Self>,
        reference: &str,
        algorithm: KeyAlgorithm,
    ) -> Result<TokenKey, TokenError> {
        let params = ec_params(algorithm).ok_or(TokenError::Unsupported(algorithm))?;
        let id = reference.as_bytes().to_vec();
        let public_template = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(params.to_vec()),
            Attribute::Id(id.clone()),
            Attribute::Label(id.clone()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Id(id.clone()),
            Attribute::Label(id.clone()),
        ];
        let point = self
            .with_session(|session, _| {
                let (public, _private) = session.generate_key_pair(
                    &Mechanism::EccKeyPairGen,
                    &public_template,
                    &private_template,
                )?;
                session.get_attributes(public, &[AttributeType::EcPoint])
            })
            .map_err(|e| self.reported(e))?
            .into_iter()
            .find_map(|attribute| match attribute {
                Attribute::EcPoint(point) => Some(point),
                _ => None,
            })
            .ok_or_else(|| TokenError::Device("the new public key has no CKA_EC_POINT".into()))?;
        let public_key = uncompressed_point(&point, algorithm)
            .ok_or_else(|| TokenError::Device("the new public key's CKA_EC_POINT is malformed".into()))?;
        Ok(TokenKey::new(self.clone(), reference, algorithm, public_key))
    }

    /// Destroy the key pair stored under `reference` (a key made for something that was then not
    /// stored). Best effort: what cannot be destroyed is reported and left.
    pub fn destroy(&self, reference: &str) {
        let result = self.with_session(|session, _| {
            for handle in session.find_objects(&[Attribute::Id(reference.as_bytes().to_vec())])? {
                session.destroy_object(handle)?;
            }
            Ok(())
        });
        if let Err(err) = result {
            tracing::warn!(key.reference = reference, error = %err, "cannot destroy an unused key in the PKCS#11 token");
        }
    }

    /// Sign a digest with the private key of `key` (raw `r || s`).
    fn sign_digest(&self, key: &TokenKey, digest: &[u8]) -> Result<Vec<u8>, TokenError> {
        self.with_session(|session, epoch| {
            let cached = *key.handle.lock();
            let handle = match cached {
                Some((seen, handle)) if seen == epoch => handle,
                _ => {
                    let Some(handle) = session
                        .find_objects(&[
                            Attribute::Class(ObjectClass::PRIVATE_KEY),
                            Attribute::KeyType(KeyType::EC),
                            Attribute::Id(key.reference.as_bytes().to_vec()),
                        ])?
                        .into_iter()
                        .next()
                    else {
                        return Ok(None);
                    };
                    *key.handle.lock() = Some((epoch, handle));
                    handle
                }
            };
            session.sign(&Mechanism::Ecdsa, handle, digest).map(Some)
        })
        .and_then(|signature| signature.ok_or_else(|| TokenError::KeyNotFound(key.reference.clone())))
        .map_err(|e| self.reported(e))
    }

    /// Run `op` on a logged-in session of the token; the session goes back to the pool unless
    /// the token went away.
    fn with_session<T>(&self, op: impl FnOnce(&Session, u64) -> Result<T, CkError>) -> Result<T, TokenError> {
        let pooled = self.checkout()?;
        match op(&pooled.session, pooled.epoch) {
            Ok(value) => {
                self.give_back(pooled);
                Ok(value)
            }
            Err(err) => {
                if token_gone(&err) {
                    self.reset(pooled.epoch);
                } else {
                    self.give_back(pooled);
                }
                Err(TokenError::Device(err.to_string()))
            }
        }
    }

    fn checkout(&self) -> Result<Pooled, TokenError> {
        let epoch = self.state.lock().epoch;
        while let Some(pooled) = self.idle.lock().pop() {
            if pooled.epoch == epoch {
                return Ok(pooled);
            }
        }
        self.open_session()
    }

    fn give_back(&self, pooled: Pooled) {
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE_SESSIONS {
            idle.push(pooled);
        }
    }

    /// The token went away: forget its slot, sessions and object handles.
    fn reset(&self, seen_epoch: u64) {
        let mut state = self.state.lock();
        if state.epoch == seen_epoch {
            state.epoch += 1;
            state.slot = None;
        }
        drop(state);
        self.idle.lock().clear();
    }

    /// Open a session (loading the module and finding the token first if needed), logged in.
    /// Opening is serialised; the sessions then work in parallel.
    fn open_session(&self) -> Result<Pooled, TokenError> {
        let mut state = self.state.lock();
        let context = match &state.context {
            Some(context) => context.clone(),
            None => {
                let context = load_module(&self.config)?;
                state.context = Some(context.clone());
                context
            }
        };
        let slot = match state.slot {
            Some(slot) => slot,
            None => {
                let slot = find_token(&context, &self.config.token_label)?;
                state.slot = Some(slot);
                slot
            }
        };
        let session = match context.open_rw_session(slot) {
            Ok(session) => session,
            Err(err) => {
                if token_gone(&err) {
                    state.slot = None;
                    state.epoch += 1;
                }
                return Err(TokenError::Device(err.to_string()));
            }
        };
        let logged_in = session
            .get_session_info()
            .map(|info| matches!(info.session_state(), SessionState::RwUser | SessionState::RoUser))
            .unwrap_or(false);
        if !logged_in {
            self.login(&mut state, &session)?;
        }
        Ok(Pooled { epoch: state.epoch, session })
    }

    fn login(&self, state: &mut State, session: &Session) -> Result<(), TokenError> {
        let pin = read_pin(&self.config)?;
        let fingerprint =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pin.as_bytes()).as_ref().to_vec();
        if state.refused_pin.as_ref() == Some(&fingerprint) {
            return Err(TokenError::PinRefused);
        }
        let secret = cryptoki::types::AuthPin::new(pin.as_str().into());
        match session.login(UserType::User, Some(&secret)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                state.refused_pin = None;
                Ok(())
            }
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange, _)) => {
                state.refused_pin = Some(fingerprint);
                Err(TokenError::PinRefused)
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(TokenError::PinLocked),
            Err(err) => Err(TokenError::Device(err.to_string())),
        }
    }

    /// Report a failure in the log at warn, at most once a minute (with how many were not), and
    /// answer it.
    fn reported(&self, err: TokenError) -> TokenError {
        if let Some(suppressed) = self.warned.lock().due() {
            tracing::warn!(
                pkcs11.token = %self.config.token_label,
                error = %err,
                suppressed,
                "the PKCS#11 token cannot sign; issuance answers 503 until it can"
            );
        }
        err
    }
}

fn load_module(config: &Pkcs11Config) -> Result<Pkcs11, TokenError> {
    let module_error =
        |detail: String| TokenError::Module { module: config.module.display().to_string(), detail };
    let context = Pkcs11::new(&config.module).map_err(|e| module_error(e.to_string()))?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(context),
        Err(err) => Err(module_error(err.to_string())),
    }
}

fn find_token(context: &Pkcs11, label: &str) -> Result<Slot, TokenError> {
    let slots = context.get_slots_with_token().map_err(|e| TokenError::Device(e.to_string()))?;
    slots
        .into_iter()
        .find(|slot| context.get_token_info(*slot).is_ok_and(|info| info.label() == label))
        .ok_or_else(|| TokenError::Absent(label.to_string()))
}

/// The PIN: the file's first line.
fn read_pin(config: &Pkcs11Config) -> Result<Zeroizing<String>, TokenError> {
    let content = Zeroizing::new(
        std::fs::read(&config.pin_file)
            .map_err(|e| TokenError::PinFile(format!("{}: {e}", config.pin_file.display())))?,
    );
    let text = std::str::from_utf8(&content)
        .map_err(|_| TokenError::PinFile(format!("{}: not UTF-8", config.pin_file.display())))?;
    Ok(Zeroizing::new(text.lines().next().unwrap_or_default().to_string()))
}

/// Failures after which the token's sessions and handles are not worth keeping.
fn token_gone(err: &CkError) -> bool {
    matches!(
        err,
        CkError::Pkcs11(
            RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::SlotIdInvalid
                | RvError::CryptokiNotInitialized,
            _
        )
    )
}

/// DER of the named curve's OID, as CKA_EC_PARAMS.
fn ec_params(algorithm: KeyAlgorithm) -> Option<&'static [u8]> {
    match algorithm {
        // 1.2.840.10045.3.1.7 (prime256v1)
        KeyAlgorithm::P256 => Some(&[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
        // 1.3.132.0.34 (secp384r1)
        KeyAlgorithm::P384 => Some(&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]),
        KeyAlgorithm::Ed25519 | KeyAlgorithm::Rsa => None,
    }
}

/// Whether a key of `algorithm` can be kept in a token.
pub fn supports(algorithm: KeyAlgorithm) -> bool {
    ec_params(algorithm).is_some()
}

/// The uncompressed point (`04 || x || y`) of a CKA_EC_POINT, which is a DER OCTET STRING holding
/// it (some tokens give the bare point). Both start with 0x04: the length tells them apart.
fn uncompressed_point(value: &[u8], algorithm: KeyAlgorithm) -> Option<Vec<u8>> {
    use der::Decode;
    let expected = match algorithm {
        KeyAlgorithm::P256 => 65,
        KeyAlgorithm::P384 => 97,
        KeyAlgorithm::Ed25519 | KeyAlgorithm::Rsa => return None,
    };
    let is_point = |bytes: &[u8]| bytes.len() == expected && bytes.first() == Some(&0x04);
    if is_point(value) {
        return Some(value.to_vec());
    }
    let inner = der::asn1::OctetString::from_der(value).ok()?;
    is_point(inner.as_bytes()).then(|| inner.as_bytes().to_vec())
}

/// A CA key kept in the token: signs there, and checks each signature against the public key of
/// its CA certificate before it is used (a wrong or faulty token never yields a bad certificate).
pub struct TokenKey {
    token: Arc<Token>,
    reference: String,
    algorithm: KeyAlgorithm,
    public_key: Vec<u8>,
    handle: Mutex<Option<(u64, ObjectHandle)>>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("reference", &self.reference)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl TokenKey {
    /// The key stored in `token` under `reference`, whose public key is `public_key` (an
    /// uncompressed point, as in its CA certificate). Nothing is asked of the token until it signs.
    pub fn new(token: Arc<Token>, reference: &str, algorithm: KeyAlgorithm, public_key: Vec<u8>) -> Self {
        Self { token, reference: reference.to_string(), algorithm, public_key, handle: Mutex::new(None) }
    }

    pub fn reference(&self) -> &str {
        &self.reference
    }
}

impl CaKey for TokenKey {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, PkiError> {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1, UnparsedPublicKey};
        let (digest, verification) = match self.algorithm {
            KeyAlgorithm::P256 => (&aws_lc_rs::digest::SHA256, &ECDSA_P256_SHA256_ASN1),
            KeyAlgorithm::P384 => (&aws_lc_rs::digest::SHA384, &ECDSA_P384_SHA384_ASN1),
            KeyAlgorithm::Ed25519 | KeyAlgorithm::Rsa => {
                return Err(PkiError::KeyUnavailable(TokenError::Unsupported(self.algorithm).to_string()));
            }
        };
        let digest = aws_lc_rs::digest::digest(digest, message);
        let raw = self
            .token
            .sign_digest(self, digest.as_ref())
            .map_err(|e| PkiError::KeyUnavailable(e.to_string()))?;
        let signature = ecdsa_signature_to_der(&raw)?;
        UnparsedPublicKey::new(verification, &self.public_key).verify(message, &signature).map_err(|_| {
            PkiError::KeyUnavailable(format!(
                "the token's key {:?} made a signature that the CA certificate's key does not verify",
                self.reference
            ))
        })?;
        Ok(signature)
    }

    fn is_remote(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ec_point_is_read_wrapped_or_bare() {
        let point: Vec<u8> = std::iter::once(4).chain(1..=64).collect();
        assert_eq!(uncompressed_point(&point, KeyAlgorithm::P256).unwrap(), point);
        let mut wrapped = vec![0x04, 65];
        wrapped.extend_from_slice(&point);
        assert_eq!(uncompressed_point(&wrapped, KeyAlgorithm::P256).unwrap(), point);
        assert!(uncompressed_point(&wrapped, KeyAlgorithm::P384).is_none());
        assert!(uncompressed_point(&[0x30, 0x00], KeyAlgorithm::P256).is_none());
    }

    #[test]
    fn a_missing_module_is_a_clear_error_without_the_pin() {
        let dir = tempfile::tempdir().unwrap();
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, "s3cret-pin\n").unwrap();
        let token = Token::new(Pkcs11Config {
            module: dir.path().join("missing.so"),
            token_label: "kca".into(),
            pin_file,
        });
        let err = token.connect().unwrap_err();
        assert!(matches!(err, TokenError::Module { .. }), "{err}");
        assert!(!err.to_string().contains("s3cret"));
    }
}
