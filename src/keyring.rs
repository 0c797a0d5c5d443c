//! The master key, the PKCS#11 token, and the CA signers they give: a sealed key is unsealed once
//! and kept in memory (dropped, and cleansed by aws-lc, when its authority goes away); a key in
//! the token stays there and signs through it. New CA keys are made here, in either storage.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::config::StoreArgs;
use crate::pkcs11::{Token, TokenError, TokenKey};
use crate::pki::ca::{AuthorityIdentity, create_authority, create_authority_with_key};
use crate::pki::seal::MasterKey;
use crate::pki::{CaSigner, KeyAlgorithm, KeyStorage, PkiError};
use crate::store::{
    AuditEntry, AuthorityRecord, MASTER_KEY_CHECK, MASTER_KEY_CHECK_PREVIOUS, PreviousSeal, RewrapCounts,
    SealedOwner, Store, StoreError,
};

const MASTER_KEY_CHECK_PLAINTEXT: &[u8] = b"kca master key check";

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("{0}")]
    MasterKey(String),
    #[error(
        "the master key does not open the keys sealed in this database: \
         set KCA_MASTER_KEY or KCA_MASTER_KEY_FILE to the key this database was created with"
    )]
    WrongMasterKey,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(
        "no PKCS#11 token is configured: set KCA_PKCS11_MODULE, KCA_PKCS11_TOKEN_LABEL and KCA_PKCS11_PIN_FILE"
    )]
    NoToken,
    #[error("the PKCS#11 token is unavailable: {0}")]
    Token(#[from] TokenError),
}

/// Where a new CA key went, as its authority row records it.
#[derive(Debug)]
pub struct StoredKey {
    pub storage: KeyStorage,
    /// Sealed under the master key; empty for a key in the token.
    pub sealed_key: Vec<u8>,
    pub key_version: i32,
    /// The key's CKA_ID and CKA_LABEL in the token.
    pub reference: Option<String>,
}

/// Where the master key came from, for one startup log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterKeySource {
    Environment,
    File,
    /// Created in the data directory: for development only.
    GeneratedForDevelopment,
    DataDirectory,
}

/// Read the master key: `KCA_MASTER_KEY` (base64), else `KCA_MASTER_KEY_FILE` (raw 32 bytes or
/// base64), else `<data dir>/master.key`, created (mode 0600) when missing.
pub fn load_master_key(args: &StoreArgs) -> Result<(MasterKey, MasterKeySource), KeyringError> {
    let version = args.master_key_version;
    if let Some(value) = &args.master_key {
        let bytes = decode_key_text(value.as_bytes()).ok_or_else(|| {
            KeyringError::MasterKey("KCA_MASTER_KEY must be 32 bytes, base64-encoded".into())
        })?;
        return Ok((MasterKey::from_bytes(&bytes, version)?, MasterKeySource::Environment));
    }
    if let Some(path) = &args.master_key_file {
        return Ok((read_master_key_file(path, version, "KCA_MASTER_KEY_FILE")?, MasterKeySource::File));
    }
    let path = args.data_dir.join("master.key");
    if path.exists() {
        let content = Zeroizing::new(
            std::fs::read(&path)
                .map_err(|e| KeyringError::MasterKey(format!("cannot read {}: {e}", path.display())))?,
        );
        let bytes = decode_key_text(&content)
            .ok_or_else(|| KeyringError::MasterKey(format!("{} is not a 32-byte key", path.display())))?;
        return Ok((MasterKey::from_bytes(&bytes, version)?, MasterKeySource::DataDirectory));
    }
    let (key, bytes) = MasterKey::generate()?;
    write_private_file(&path, STANDARD.encode(&bytes).as_bytes())
        .map_err(|e| KeyringError::MasterKey(format!("cannot create {}: {e}", path.display())))?;
    Ok((key, MasterKeySource::GeneratedForDevelopment))
}

/// A master key from a file holding 32 bytes, raw or base64; `what` names the setting in errors.
pub fn read_master_key_file(path: &Path, version: i32, what: &str) -> Result<MasterKey, KeyringError> {
    let content = Zeroizing::new(
        std::fs::read(path)
            .map_err(|e| KeyringError::MasterKey(format!("cannot read {what} {}: {e}", path.display())))?,
    );
    let bytes = decode_key_text(&content).ok_or_else(|| {
        KeyringError::MasterKey(format!(
            "{what} {} must hold 32 bytes, raw or base64-encoded",
            path.display()
        ))
    })?;
    Ok(MasterKey::from_bytes(&bytes, version)?)
}

fn decode_key_text(content: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if content.len() == MasterKey::LEN {
        return Some(Zeroizing::new(content.to_vec()));
    }
    let text = std::str::from_utf8(content).ok()?.trim();
    let bytes = Zeroizing::new(STANDARD.decode(text).ok()?);
    (bytes.len() == MasterKey::LEN).then_some(bytes)
}

/// Write a file only its owner can read, creating parent directories.
pub fn write_private_file(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(content)?;
    file.sync_all()
}

/// Associated data binding a sealed CA key to its authority row.
pub fn authority_aad(authority_id: Uuid) -> Vec<u8> {
    let mut aad = b"kca:authority-key:".to_vec();
    aad.extend_from_slice(authority_id.as_bytes());
    aad
}

/// Associated data binding a sealed service-account key to its row.
pub fn service_account_aad(key_id: Uuid) -> Vec<u8> {
    let mut aad = b"kca:service-account-key:".to_vec();
    aad.extend_from_slice(key_id.as_bytes());
    aad
}

/// Associated data binding a sealed token signing key to its id; key 1 keeps the binding it was
/// first sealed with.
pub fn token_key_aad(id: i32) -> Vec<u8> {
    if id == 1 {
        b"kca:token-signing-key".to_vec()
    } else {
        format!("kca:token-signing-key:{id}").into_bytes()
    }
}

fn opens_check(master: &MasterKey, sealed: &[u8]) -> bool {
    matches!(master.open(sealed, MASTER_KEY_CHECK.as_bytes()), Ok(plain) if plain.as_slice() == MASTER_KEY_CHECK_PLAINTEXT)
}

/// Open a key stored sealed, and perhaps also under a previous master key version (during a
/// master-key change): the copy labelled with this master key's version is tried first, then
/// the other (AES-GCM tells a wrong key, so a label is only a hint).
pub fn open_sealed(
    master: &MasterKey,
    sealed: &[u8],
    version: Option<i32>,
    previous: Option<&PreviousSeal>,
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeyringError> {
    let mut copies = vec![(version, sealed)];
    if let Some(previous) = previous {
        copies.push((previous.key_version, previous.sealed_key.as_slice()));
    }
    copies.sort_by_key(|(version, _)| *version != Some(master.version()));
    copies
        .into_iter()
        .find_map(|(_, sealed)| master.open(sealed, aad).ok())
        .ok_or(KeyringError::WrongMasterKey)
}

/// The associated data a sealed value of `owner` is bound to.
pub fn sealed_aad(owner: SealedOwner) -> Vec<u8> {
    match owner {
        SealedOwner::Authority(id) => authority_aad(id),
        SealedOwner::TokenKey(id) => token_key_aad(id),
        SealedOwner::PendingAuthority(id) => authority_aad(id),
        SealedOwner::ServiceAccountKey(id) => service_account_aad(id),
        SealedOwner::MasterKeyCheck => MASTER_KEY_CHECK.as_bytes().to_vec(),
    }
}

/// Seal every key in the database again under `new` (`kca keys rewrap`): what `current` opens is
/// sealed under `new`, the value it replaces kept as the previous seal, in one audited
/// transaction. What `new` opens already is left alone, so running it again after replicas still
/// on `current` added keys seals just those. A value neither key opens stops it, changing nothing.
pub async fn rewrap(
    store: &dyn Store,
    current: &MasterKey,
    new: &MasterKey,
    audit: &AuditEntry,
) -> Result<RewrapCounts, KeyringError> {
    let reseal = |owner: SealedOwner, sealed: &[u8]| -> Result<Option<Vec<u8>>, PkiError> {
        let aad = sealed_aad(owner);
        if new.open(sealed, &aad).is_ok() {
            return Ok(None);
        }
        let plain = current.open(sealed, &aad)?;
        new.seal(&plain, &aad).map(Some)
    };
    Ok(store.rewrap_sealed_keys(new.version(), &reseal, audit).await?)
}

/// Forget the copies a rewrap kept under the previous master key (`kca keys drop-previous`), once
/// `master` opens every key; otherwise nothing changes.
pub async fn drop_previous(
    store: &dyn Store,
    master: &MasterKey,
    audit: &AuditEntry,
) -> Result<RewrapCounts, KeyringError> {
    let check = |owner: SealedOwner, sealed: &[u8]| -> Result<(), PkiError> {
        master.open(sealed, &sealed_aad(owner)).map(drop)
    };
    Ok(store.drop_previous_seals(&check, audit).await?)
}

/// The master key, the PKCS#11 token (when configured) and the CA signers, keyed by authority id.
pub struct Keyring {
    master: MasterKey,
    token: Option<Arc<Token>>,
    signers: RwLock<HashMap<Uuid, Arc<CaSigner>>>,
}

impl Keyring {
    pub fn new(master: MasterKey) -> Self {
        Self { master, token: None, signers: RwLock::new(HashMap::new()) }
    }

    /// Keep CA keys of `"key_storage": "pkcs11"` in this token.
    pub fn with_token(mut self, token: Option<Arc<Token>>) -> Self {
        self.token = token;
        self
    }

    /// The configured token.
    pub fn token(&self) -> Result<&Arc<Token>, KeyringError> {
        self.token.as_ref().ok_or(KeyringError::NoToken)
    }

    /// Make a CA (its key in `storage`) for the authority `authority_id`: its signer and what
    /// its row records of the key. Blocking: the token, or key generation, takes its time.
    pub fn create_authority(
        &self,
        storage: KeyStorage,
        authority_id: Uuid,
        identity: &AuthorityIdentity<'_>,
        algorithm: KeyAlgorithm,
        now: time::OffsetDateTime,
    ) -> Result<(CaSigner, StoredKey), KeyringError> {
        match storage {
            KeyStorage::Sealed => {
                let made = create_authority(identity, algorithm, now)?;
                let sealed_key = self.master.seal(&made.pkcs8, &authority_aad(authority_id))?;
                let stored =
                    StoredKey { storage, sealed_key, key_version: self.master.version(), reference: None };
                Ok((made.signer, stored))
            }
            KeyStorage::Pkcs11 => {
                let token = self.token()?;
                let reference = authority_id.to_string();
                let key = token.generate(&reference, algorithm)?;
                let signer = create_authority_with_key(identity, Box::new(key), now).inspect_err(|_| {
                    token.destroy(&reference);
                })?;
                let stored = StoredKey {
                    storage,
                    sealed_key: Vec::new(),
                    key_version: self.master.version(),
                    reference: Some(reference),
                };
                Ok((signer, stored))
            }
        }
    }

    /// Destroy the token keys of authorities that were made but then not stored (best effort).
    pub fn discard(&self, authorities: &[AuthorityRecord]) {
        for authority in authorities {
            if let (KeyStorage::Pkcs11, Some(reference), Some(token)) =
                (authority.key_storage, &authority.key_reference, &self.token)
            {
                token.destroy(reference);
            }
        }
    }

    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// At first start, seal a known value; later, check the master key opens it (or, during a
    /// master-key change, the copy a rewrap kept under the previous version).
    pub async fn verify_master_key(&self, store: &dyn Store) -> Result<(), KeyringError> {
        let sealed = self.master.seal(MASTER_KEY_CHECK_PLAINTEXT, MASTER_KEY_CHECK.as_bytes())?;
        let stored = store.insert_setting_if_absent(MASTER_KEY_CHECK, &sealed).await?;
        self.open_check(store, &stored).await
    }

    /// Check, reading only, that the master key opens the value sealed at first start: what
    /// `/readyz` asks on every probe.
    pub async fn check_master_key(&self, store: &dyn Store) -> Result<(), KeyringError> {
        let stored = store.get_setting(MASTER_KEY_CHECK).await?.ok_or(KeyringError::WrongMasterKey)?;
        self.open_check(store, &stored).await
    }

    async fn open_check(&self, store: &dyn Store, stored: &[u8]) -> Result<(), KeyringError> {
        if opens_check(&self.master, stored) {
            return Ok(());
        }
        match store.get_setting(MASTER_KEY_CHECK_PREVIOUS).await? {
            Some(previous) if opens_check(&self.master, &previous) => Ok(()),
            _ => Err(KeyringError::WrongMasterKey),
        }
    }

    /// The signer of an authority, unsealed on first use.
    pub fn signer(&self, authority: &AuthorityRecord) -> Result<Arc<CaSigner>, KeyringError> {
        if let Some(signer) = self.signers.read().get(&authority.id) {
            return Ok(signer.clone());
        }
        if authority.key_storage == KeyStorage::Pkcs11 {
            // Nothing is asked of the token until the key signs: the public key is the certificate's.
            let reference = authority.key_reference.as_deref().ok_or_else(|| {
                KeyringError::Store(StoreError::Corrupt(format!(
                    "authority {} keeps its key in the token but names no key",
                    authority.id
                )))
            })?;
            let public_key = crate::pki::ca::certificate_public_key(&authority.certificate_der)?;
            let key = TokenKey::new(self.token()?.clone(), reference, authority.key_algorithm, public_key);
            let signer = Arc::new(CaSigner::with_key(&authority.certificate_der, Box::new(key))?);
            self.signers.write().insert(authority.id, signer.clone());
            return Ok(signer);
        }
        let pkcs8 = open_sealed(
            &self.master,
            &authority.sealed_key,
            Some(authority.key_version),
            authority.previous_seal.as_ref(),
            &authority_aad(authority.id),
        )?;
        let signer = Arc::new(CaSigner::load(&authority.certificate_der, authority.key_algorithm, &pkcs8)?);
        self.signers.write().insert(authority.id, signer.clone());
        Ok(signer)
    }

    /// Keep a signer that was just created, so it is not unsealed again.
    pub fn insert(&self, authority_id: Uuid, signer: Arc<CaSigner>) {
        self.signers.write().insert(authority_id, signer);
    }

    /// Forget signers whose authority is gone or retired.
    pub fn remove(&self, authority_ids: &[Uuid]) {
        let mut signers = self.signers.write();
        for id in authority_ids {
            signers.remove(id);
        }
    }
}
