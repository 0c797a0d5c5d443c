//! Service-account token signing keys (kube-apiserver's `sa.key`/`sa.pub`): making one, reading
//! an existing one, and the public forms kube-apiserver and token verifiers read.

use base64::Engine;
use zeroize::Zeroizing;

use super::import::private_key_pkcs8;
use super::{KeyAlgorithm, PkiError, SigningKeyPair};

/// A service-account key: its algorithm, its PKCS#8 (to be sealed), and its public forms.
pub struct ServiceAccountKey {
    pub algorithm: KeyAlgorithm,
    pub pkcs8: Zeroizing<Vec<u8>>,
    /// `PUBLIC KEY` PEM (SubjectPublicKeyInfo): a line of `--service-account-key-file`.
    pub public_pem: String,
    /// The `kid` kube-apiserver puts in the tokens it signs with this key: base64url (unpadded)
    /// of the SHA-256 of the DER public key.
    pub key_id: String,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl ServiceAccountKey {
    fn from_pkcs8(algorithm: KeyAlgorithm, pkcs8: Zeroizing<Vec<u8>>) -> Result<Self, PkiError> {
        let key = SigningKeyPair::from_pkcs8(algorithm, &pkcs8)?;
        let spki = key.spki_der();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &spki);
        Ok(Self {
            algorithm,
            pkcs8,
            public_pem: super::to_pem("PUBLIC KEY", &spki),
            key_id: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref()),
        })
    }

    /// A new ECDSA P-256 key (ES256 tokens): kube-apiserver signs and verifies with ECDSA keys as
    /// with RSA ones, and kca never generates RSA keys.
    pub fn generate() -> Result<Self, PkiError> {
        let (_, pkcs8) = SigningKeyPair::generate(KeyAlgorithm::P256)?;
        Self::from_pkcs8(KeyAlgorithm::P256, pkcs8)
    }

    /// An existing key (kubeadm's `sa.key`: RSA, PKCS#1 or PKCS#8; or ECDSA P-256/P-384, SEC1 or
    /// PKCS#8). Refusals name `private_key_pem` and never quote the key.
    pub fn import(private_key_pem: &str) -> Result<Self, PkiError> {
        for algorithm in [KeyAlgorithm::Rsa, KeyAlgorithm::P256, KeyAlgorithm::P384] {
            match private_key_pkcs8(private_key_pem, algorithm) {
                Ok(pkcs8) => return Self::from_pkcs8(algorithm, pkcs8),
                Err(PkiError::ImportRefused { detail, .. }) if detail.contains("encrypted") => {
                    return Err(PkiError::ImportRefused { field: "private_key_pem", detail });
                }
                Err(_) => continue,
            }
        }
        Err(PkiError::ImportRefused {
            field: "private_key_pem",
            detail: "not an unencrypted RSA (2048 to 8192 bits) or ECDSA P-256/P-384 private key in PEM"
                .into(),
        })
    }

    /// The key as kube-apiserver's `--service-account-signing-key-file` reads it: PKCS#8 PEM.
    pub fn private_pem(&self) -> Zeroizing<String> {
        super::keys::private_key_pem(&self.pkcs8)
    }

    /// Reload a sealed key after unsealing.
    pub fn load(algorithm: KeyAlgorithm, pkcs8: Zeroizing<Vec<u8>>) -> Result<Self, PkiError> {
        Self::from_pkcs8(algorithm, pkcs8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_reads_back_with_the_same_id() {
        let key = ServiceAccountKey::generate().unwrap();
        let again = ServiceAccountKey::import(&key.private_pem()).unwrap();
        assert_eq!(again.key_id, key.key_id);
        assert_eq!(again.public_pem, key.public_pem);
        assert_eq!(key.key_id.len(), 43);
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }

    #[test]
    fn other_keys_are_refused_without_being_quoted() {
        let (_, ed) = SigningKeyPair::generate(KeyAlgorithm::Ed25519).unwrap();
        let pem = super::super::to_pem("PRIVATE KEY", &ed);
        match ServiceAccountKey::import(&pem) {
            Err(PkiError::ImportRefused { field, detail }) => {
                assert_eq!(field, "private_key_pem");
                assert!(!detail.contains("PRIVATE KEY-----"));
            }
            other => panic!("{other:?}"),
        }
    }
}
