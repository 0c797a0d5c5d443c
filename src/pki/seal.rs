//! Sealing private keys at rest: AES-256-GCM under the master key, with what the key belongs to
//! bound in as associated data, so a sealed key copied onto another row does not open.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use super::PkiError;

/// The 32-byte master key, with the version number stored beside everything it seals.
pub struct MasterKey {
    key: LessSafeKey,
    version: i32,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("version", &self.version).finish_non_exhaustive()
    }
}

impl MasterKey {
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: &[u8], version: i32) -> Result<Self, PkiError> {
        if bytes.len() != Self::LEN {
            return Err(PkiError::InvalidMasterKey("it must be exactly 32 bytes"));
        }
        let unbound =
            UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| PkiError::InvalidMasterKey("rejected"))?;
        Ok(Self { key: LessSafeKey::new(unbound), version })
    }

    /// A new random key, returned with its bytes so the caller can store them.
    pub fn generate() -> Result<(Self, Zeroizing<Vec<u8>>), PkiError> {
        let mut bytes = Zeroizing::new(vec![0u8; Self::LEN]);
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| PkiError::KeyGeneration)?;
        let key = Self::from_bytes(&bytes, 1)?;
        Ok((key, bytes))
    }

    pub fn version(&self) -> i32 {
        self.version
    }

    /// `nonce || ciphertext || tag`.
    pub fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Result<Vec<u8>, PkiError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| PkiError::KeyGeneration)?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
        sealed.extend_from_slice(&nonce);
        let mut in_out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data),
                &mut in_out,
            )
            .map_err(|_| PkiError::Signing)?;
        sealed.extend_from_slice(&in_out);
        in_out.iter_mut().for_each(|b| *b = 0);
        Ok(sealed)
    }

    /// Open what [`seal`](Self::seal) made; fails (never returns garbage) under a wrong key or
    /// wrong associated data.
    pub fn open(&self, sealed: &[u8], associated_data: &[u8]) -> Result<Zeroizing<Vec<u8>>, PkiError> {
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(PkiError::Unseal);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| PkiError::Unseal)?;
        let mut in_out = Zeroizing::new(ciphertext.to_vec());
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(associated_data), &mut in_out)
            .map_err(|_| PkiError::Unseal)?
            .len();
        in_out.truncate(plain_len);
        Ok(in_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_the_same_key_and_associated_data() {
        let (key, _) = MasterKey::generate().unwrap();
        let (other, _) = MasterKey::generate().unwrap();
        let sealed = key.seal(b"secret key", b"authority-1").unwrap();
        assert!(!sealed.windows(10).any(|w| w == b"secret key"));
        assert_eq!(key.open(&sealed, b"authority-1").unwrap().as_slice(), b"secret key");
        assert!(matches!(key.open(&sealed, b"authority-2"), Err(PkiError::Unseal)));
        assert!(matches!(other.open(&sealed, b"authority-1"), Err(PkiError::Unseal)));
        assert!(matches!(key.open(&sealed[..10], b"authority-1"), Err(PkiError::Unseal)));
    }

    #[test]
    fn a_master_key_must_be_32_bytes() {
        assert!(MasterKey::from_bytes(&[0; 31], 1).is_err());
        assert!(MasterKey::from_bytes(&[0; 32], 1).is_ok());
    }
}
