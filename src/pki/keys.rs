//! Keys: the one signing interface of a CA ([`CaKey`]), key pairs held in memory (generation,
//! loading from PKCS#8, signing), and where a CA's key is kept ([`KeyStorage`]).
//!
//! One implementation over aws-lc-rs serves rcgen (CA certificates, CRLs) and the x509-cert based
//! leaf builder alike, so a single crypto library is compiled in. A key in a PKCS#11 token
//! implements [`CaKey`] outside this pure core (`crate::pkcs11`).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
    RSA_PKCS1_SHA256, RsaKeyPair,
};
use der::asn1::ObjectIdentifier;
use serde::{Deserialize, Serialize};
use spki::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

use super::PkiError;

/// The key algorithms kca signs with. RSA is never generated (its key generation costs ~150 ms):
/// it is only loaded, for CAs imported from an existing PKI (kubeadm makes RSA keys by default),
/// and no request can ask for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256 (the default).
    #[default]
    P256,
    /// ECDSA on NIST P-384 with SHA-384.
    P384,
    /// Ed25519.
    Ed25519,
    /// RSA (2048 to 8192 bits), PKCS#1 v1.5 with SHA-256: imported keys only.
    #[serde(skip)]
    Rsa,
}

impl KeyAlgorithm {
    /// The algorithms kca generates keys for.
    pub const GENERATED: [KeyAlgorithm; 3] = [KeyAlgorithm::P256, KeyAlgorithm::P384, KeyAlgorithm::Ed25519];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::P256 => "p256",
            KeyAlgorithm::P384 => "p384",
            KeyAlgorithm::Ed25519 => "ed25519",
            KeyAlgorithm::Rsa => "rsa",
        }
    }

    /// Any algorithm kca signs with, as stored.
    pub fn parse(s: &str) -> Option<Self> {
        [KeyAlgorithm::P256, KeyAlgorithm::P384, KeyAlgorithm::Ed25519, KeyAlgorithm::Rsa]
            .into_iter()
            .find(|alg| alg.as_str() == s)
    }

    pub(crate) fn rcgen_algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyAlgorithm::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
            KeyAlgorithm::Rsa => &rcgen::PKCS_RSA_SHA256,
        }
    }

    /// The signatureAlgorithm this key signs certificates and CRLs with.
    pub fn signature_algorithm(self) -> AlgorithmIdentifierOwned {
        let oid = match self {
            KeyAlgorithm::P256 => ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2"),
            KeyAlgorithm::P384 => ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3"),
            KeyAlgorithm::Ed25519 => ObjectIdentifier::new_unwrap("1.3.101.112"),
            // sha256WithRSAEncryption takes NULL parameters (RFC 4055).
            KeyAlgorithm::Rsa => {
                return AlgorithmIdentifierOwned {
                    oid: ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11"),
                    parameters: Some(der::Any::null()),
                };
            }
        };
        AlgorithmIdentifierOwned { oid, parameters: None }
    }
}

impl std::fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a CA's private key is kept: sealed under the master key in the database (the default),
/// or generated inside a PKCS#11 token that it never leaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyStorage {
    /// In the database, sealed with AES-256-GCM under the master key.
    #[default]
    Sealed,
    /// In the PKCS#11 token kca is configured with (`KCA_PKCS11_*`).
    Pkcs11,
}

impl KeyStorage {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStorage::Sealed => "sealed",
            KeyStorage::Pkcs11 => "pkcs11",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [KeyStorage::Sealed, KeyStorage::Pkcs11].into_iter().find(|storage| storage.as_str() == s)
    }
}

impl std::fmt::Display for KeyStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A CA's private key, wherever it lives: every certificate and CRL a CA signs goes through this.
pub trait CaKey: Send + Sync + std::fmt::Debug {
    fn algorithm(&self) -> KeyAlgorithm;

    /// The subjectPublicKey: an uncompressed EC point, or the Ed25519 key.
    fn public_key(&self) -> &[u8];

    /// Sign `message`; ECDSA signatures are ASN.1 DER, as X.509 wants them.
    fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, PkiError>;

    /// Whether signing waits on a device: callers then sign off the async workers.
    fn is_remote(&self) -> bool {
        false
    }
}

/// The DER SubjectPublicKeyInfo of any CA key.
pub fn spki_der(key: &dyn CaKey) -> Vec<u8> {
    rcgen::PublicKeyData::subject_public_key_info(&RcgenKey::new(key))
}

/// A [`CaKey`] as rcgen wants a signing key. rcgen's error cannot carry ours, so the first
/// failure is kept here and answered by [`RcgenKey::error`] instead of rcgen's.
pub(crate) struct RcgenKey<'a> {
    key: &'a dyn CaKey,
    failure: std::sync::Mutex<Option<PkiError>>,
}

impl<'a> RcgenKey<'a> {
    pub(crate) fn new(key: &'a dyn CaKey) -> Self {
        Self { key, failure: std::sync::Mutex::new(None) }
    }

    /// What went wrong: the key's own failure when signing failed, else rcgen's.
    pub(crate) fn error(&self, err: rcgen::Error) -> PkiError {
        self.failure.lock().ok().and_then(|mut failure| failure.take()).unwrap_or_else(|| err.into())
    }
}

impl rcgen::PublicKeyData for RcgenKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.key.public_key()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.key.algorithm().rcgen_algorithm()
    }
}

impl rcgen::SigningKey for RcgenKey<'_> {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key.sign_bytes(message).map_err(|err| {
            if let Ok(mut failure) = self.failure.lock() {
                failure.get_or_insert(err);
            }
            rcgen::Error::RemoteKeyError
        })
    }
}

/// An ECDSA signature as PKCS#11 tokens answer it (`r || s`, each as wide as the curve order) in
/// the ASN.1 DER form X.509 carries (`SEQUENCE { INTEGER r, INTEGER s }`).
pub fn ecdsa_signature_to_der(raw: &[u8]) -> Result<Vec<u8>, PkiError> {
    use der::Encode;
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return Err(PkiError::Signing);
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut body = Vec::with_capacity(raw.len() + 6);
    der::asn1::UintRef::new(r)?.encode_to_vec(&mut body)?;
    der::asn1::UintRef::new(s)?.encode_to_vec(&mut body)?;
    let mut out = Vec::with_capacity(body.len() + 4);
    der::Header::new(der::Tag::Sequence, der::Length::try_from(body.len())?)?.encode_to_vec(&mut out)?;
    out.extend_from_slice(&body);
    Ok(out)
}

enum Inner {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

/// A private key ready to sign. aws-lc-rs frees (and cleanses) the key when this is dropped.
pub struct SigningKeyPair {
    algorithm: KeyAlgorithm,
    inner: Inner,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyPair").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

impl SigningKeyPair {
    /// A fresh key pair, with its PKCS#8 (v1) encoding for sealing or handing to its owner.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<(Self, Zeroizing<Vec<u8>>), PkiError> {
        let ecdsa = match algorithm {
            KeyAlgorithm::P256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
            KeyAlgorithm::P384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
            KeyAlgorithm::Rsa => return Err(PkiError::KeyGeneration),
            KeyAlgorithm::Ed25519 => {
                // PKCS#8 v1: some consumers (older Go) refuse the v2 form with the public key.
                let pkcs8 = Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new())
                    .map_err(|_| PkiError::KeyGeneration)?;
                let pkcs8 = Zeroizing::new(pkcs8.as_ref().to_vec());
                return Ok((Self::from_pkcs8(algorithm, &pkcs8)?, pkcs8));
            }
        };
        // The generated key is kept as it is and only serialised: parsing its PKCS#8 back would
        // check the key by deriving its public point again, as costly as generating it (a tenth of
        // the CPU of a kubeconfig with a server-side key).
        let key = EcdsaKeyPair::generate(ecdsa).map_err(|_| PkiError::KeyGeneration)?;
        let pkcs8 = Zeroizing::new(key.to_pkcs8v1().map_err(|_| PkiError::KeyGeneration)?.as_ref().to_vec());
        Ok((Self { algorithm, inner: Inner::Ecdsa(key), rng: SystemRandom::new() }, pkcs8))
    }

    /// Load a key of a known algorithm from PKCS#8 DER.
    pub fn from_pkcs8(algorithm: KeyAlgorithm, pkcs8: &[u8]) -> Result<Self, PkiError> {
        let inner = match algorithm {
            KeyAlgorithm::P256 => {
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8).map(Inner::Ecdsa)
            }
            KeyAlgorithm::P384 => {
                EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, pkcs8).map(Inner::Ecdsa)
            }
            KeyAlgorithm::Ed25519 => Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).map(Inner::Ed25519),
            KeyAlgorithm::Rsa => RsaKeyPair::from_pkcs8(pkcs8).map(Inner::Rsa),
        }
        .map_err(|_| PkiError::InvalidKey("not a PKCS#8 key of the expected algorithm"))?;
        Ok(Self { algorithm, inner, rng: SystemRandom::new() })
    }

    /// Load a PEM private key of any algorithm kca signs with: PKCS#8, PKCS#1 (`RSA PRIVATE
    /// KEY`) or SEC1 (`EC PRIVATE KEY`).
    pub fn from_private_key_pem(text: &str) -> Result<Self, PkiError> {
        for algorithm in [KeyAlgorithm::P256, KeyAlgorithm::P384, KeyAlgorithm::Ed25519, KeyAlgorithm::Rsa] {
            if let Ok(pkcs8) = super::import::private_key_pkcs8(text, algorithm) {
                return Self::from_pkcs8(algorithm, &pkcs8);
            }
        }
        Err(PkiError::InvalidKey("not a PEM private key of an algorithm kca signs with"))
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The DER SubjectPublicKeyInfo of this key.
    pub fn spki_der(&self) -> Vec<u8> {
        rcgen::PublicKeyData::subject_public_key_info(self)
    }

    /// Sign `message`; ECDSA signatures are ASN.1 DER, as X.509 wants them.
    pub fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, PkiError> {
        match &self.inner {
            Inner::Ecdsa(key) => {
                key.sign(&self.rng, message).map(|sig| sig.as_ref().to_vec()).map_err(|_| PkiError::Signing)
            }
            Inner::Ed25519(key) => Ok(key.sign(message).as_ref().to_vec()),
            Inner::Rsa(key) => {
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &self.rng, message, &mut signature)
                    .map_err(|_| PkiError::Signing)?;
                Ok(signature)
            }
        }
    }
}

impl CaKey for SigningKeyPair {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key(&self) -> &[u8] {
        rcgen::PublicKeyData::der_bytes(self)
    }

    fn sign_bytes(&self, message: &[u8]) -> Result<Vec<u8>, PkiError> {
        SigningKeyPair::sign_bytes(self, message)
    }
}

impl rcgen::PublicKeyData for SigningKeyPair {
    fn der_bytes(&self) -> &[u8] {
        match &self.inner {
            Inner::Ecdsa(key) => key.public_key().as_ref(),
            Inner::Ed25519(key) => key.public_key().as_ref(),
            Inner::Rsa(key) => key.public_key().as_ref(),
        }
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm.rcgen_algorithm()
    }
}

impl rcgen::SigningKey for SigningKeyPair {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.sign_bytes(message).map_err(|_| rcgen::Error::RingUnspecified)
    }
}

/// PEM (`PRIVATE KEY`) of a PKCS#8 key, for the one response that hands a user their own new key.
pub fn private_key_pem(pkcs8: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(super::to_pem("PRIVATE KEY", pkcs8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_generates_reloads_and_signs() {
        for alg in [KeyAlgorithm::P256, KeyAlgorithm::P384, KeyAlgorithm::Ed25519] {
            let (key, pkcs8) = SigningKeyPair::generate(alg).unwrap();
            let again = SigningKeyPair::from_pkcs8(alg, &pkcs8).unwrap();
            assert_eq!(key.spki_der(), again.spki_der());
            assert!(!key.sign_bytes(b"hello").unwrap().is_empty());
        }
    }

    #[test]
    fn a_key_of_another_algorithm_is_refused() {
        let (_, pkcs8) = SigningKeyPair::generate(KeyAlgorithm::P384).unwrap();
        assert!(SigningKeyPair::from_pkcs8(KeyAlgorithm::P256, &pkcs8).is_err());
    }

    #[test]
    fn a_raw_ecdsa_signature_converts_to_the_der_form_that_verifies() {
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_ASN1,
            ECDSA_P384_SHA384_FIXED_SIGNING, UnparsedPublicKey,
        };
        let rng = SystemRandom::new();
        for (fixed, asn1, width) in [
            (&ECDSA_P256_SHA256_FIXED_SIGNING, &ECDSA_P256_SHA256_ASN1, 64),
            (&ECDSA_P384_SHA384_FIXED_SIGNING, &ECDSA_P384_SHA384_ASN1, 96),
        ] {
            let key = EcdsaKeyPair::generate(fixed).unwrap();
            // Enough signatures that some r or s have a leading zero byte or their top bit set.
            for i in 0..64u8 {
                let message = [i; 20];
                let raw = key.sign(&rng, &message).unwrap();
                assert_eq!(raw.as_ref().len(), width);
                let der = ecdsa_signature_to_der(raw.as_ref()).unwrap();
                UnparsedPublicKey::new(asn1, key.public_key().as_ref()).verify(&message, &der).unwrap();
            }
        }
        assert!(ecdsa_signature_to_der(&[]).is_err());
        assert!(ecdsa_signature_to_der(&[1, 2, 3]).is_err());
    }

    #[test]
    fn key_storages_round_trip_by_name() {
        for storage in [KeyStorage::Sealed, KeyStorage::Pkcs11] {
            assert_eq!(KeyStorage::parse(storage.as_str()), Some(storage));
        }
        assert_eq!(KeyStorage::parse("hsm"), None);
    }

    #[test]
    fn debug_output_has_no_key_material() {
        let (key, _) = SigningKeyPair::generate(KeyAlgorithm::P256).unwrap();
        assert_eq!(format!("{key:?}"), "SigningKeyPair { algorithm: P256, .. }");
    }
}
