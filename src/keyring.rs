//! The master key and the CA keys it unseals: loaded once, kept in memory, dropped (and cleansed by
//! aws-lc) when their authority goes away.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::RwLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::config::StoreArgs;
use crate::pki::seal::MasterKey;
use crate::pki::{CaSigner, PkiError};
use crate::store::{AuthorityRecord, Store, StoreError};

/// Settings key of a value sealed at first start, to tell a wrong master key at once.
const MASTER_KEY_CHECK: &str = "master_key_check";
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
        let content = Zeroizing::new(std::fs::read(path).map_err(|e| {
            KeyringError::MasterKey(format!("cannot read KCA_MASTER_KEY_FILE {}: {e}", path.display()))
        })?);
        let bytes = decode_key_text(&content).ok_or_else(|| {
            KeyringError::MasterKey(format!("{} must hold 32 bytes, raw or base64-encoded", path.display()))
        })?;
        return Ok((MasterKey::from_bytes(&bytes, version)?, MasterKeySource::File));
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

/// The master key and the unsealed CA signers, keyed by authority id.
pub struct Keyring {
    master: MasterKey,
    signers: RwLock<HashMap<Uuid, Arc<CaSigner>>>,
}

impl Keyring {
    pub fn new(master: MasterKey) -> Self {
        Self { master, signers: RwLock::new(HashMap::new()) }
    }

    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// At first start, seal a known value; later, check the master key opens it.
    pub async fn verify_master_key(&self, store: &dyn Store) -> Result<(), KeyringError> {
        let sealed = self.master.seal(MASTER_KEY_CHECK_PLAINTEXT, MASTER_KEY_CHECK.as_bytes())?;
        let stored = store.insert_setting_if_absent(MASTER_KEY_CHECK, &sealed).await?;
        match self.master.open(&stored, MASTER_KEY_CHECK.as_bytes()) {
            Ok(plain) if plain.as_slice() == MASTER_KEY_CHECK_PLAINTEXT => Ok(()),
            _ => Err(KeyringError::WrongMasterKey),
        }
    }

    /// Check, reading only, that the master key opens the value sealed at first start: what
    /// `/readyz` asks on every probe.
    pub async fn check_master_key(&self, store: &dyn Store) -> Result<(), KeyringError> {
        let stored = store.get_setting(MASTER_KEY_CHECK).await?.ok_or(KeyringError::WrongMasterKey)?;
        match self.master.open(&stored, MASTER_KEY_CHECK.as_bytes()) {
            Ok(plain) if plain.as_slice() == MASTER_KEY_CHECK_PLAINTEXT => Ok(()),
            _ => Err(KeyringError::WrongMasterKey),
        }
    }

    /// The signer of an authority, unsealed on first use.
    pub fn signer(&self, authority: &AuthorityRecord) -> Result<Arc<CaSigner>, KeyringError> {
        if let Some(signer) = self.signers.read().get(&authority.id) {
            return Ok(signer.clone());
        }
        let pkcs8 = self
            .master
            .open(&authority.sealed_key, &authority_aad(authority.id))
            .map_err(|_| KeyringError::WrongMasterKey)?;
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
