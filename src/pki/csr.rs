//! Certificate signing requests: parse, check the key type, verify the self-signature.
//!
//! Only the public key is taken from a CSR. Its subject and requested extensions are ignored: the
//! server decides what goes into the certificate. The key type is read from the public key itself,
//! never guessed from the signature algorithm (rcgen#448).

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use der::asn1::ObjectIdentifier;
use der::{Decode, Encode};
use x509_cert::request::CertReq;

use super::PkiError;

const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const RSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const RSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");

/// The public key types kca certifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsrKeyType {
    P256,
    P384,
    Ed25519,
    Rsa,
}

/// A CSR whose signature checked out; only its public key is kept.
#[derive(Debug, Clone)]
pub struct VerifiedCsr {
    pub key_type: CsrKeyType,
    pub spki_der: Vec<u8>,
}

/// Parse a PEM CSR (`CERTIFICATE REQUEST` or `NEW CERTIFICATE REQUEST`) and verify it.
pub fn verify_csr_pem(text: &str) -> Result<VerifiedCsr, PkiError> {
    let block = pem::parse(text.trim()).map_err(|_| PkiError::InvalidCsr("not a PEM block".into()))?;
    if !matches!(block.tag(), "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST") {
        return Err(PkiError::InvalidCsr(format!(
            "expected a CERTIFICATE REQUEST PEM block, found {}",
            block.tag()
        )));
    }
    verify_csr_der(block.contents())
}

/// Parse a DER CSR and verify its signature with its own public key.
pub fn verify_csr_der(der: &[u8]) -> Result<VerifiedCsr, PkiError> {
    let request = CertReq::from_der(der).map_err(|e| PkiError::InvalidCsr(format!("malformed: {e}")))?;
    let public_key = &request.info.public_key;
    let key_bits = public_key
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| PkiError::InvalidCsr("the public key has unused bits".into()))?;
    let key_type = key_type(public_key)?;
    let algorithm: &'static dyn VerificationAlgorithm = match (key_type, request.algorithm.oid) {
        (CsrKeyType::P256, ECDSA_SHA256) => &signature::ECDSA_P256_SHA256_ASN1,
        (CsrKeyType::P256, ECDSA_SHA384) => &signature::ECDSA_P256_SHA384_ASN1,
        (CsrKeyType::P384, ECDSA_SHA256) => &signature::ECDSA_P384_SHA256_ASN1,
        (CsrKeyType::P384, ECDSA_SHA384) => &signature::ECDSA_P384_SHA384_ASN1,
        (CsrKeyType::Ed25519, ED25519) => &signature::ED25519,
        (CsrKeyType::Rsa, RSA_SHA256) => &signature::RSA_PKCS1_2048_8192_SHA256,
        (CsrKeyType::Rsa, RSA_SHA384) => &signature::RSA_PKCS1_2048_8192_SHA384,
        (CsrKeyType::Rsa, RSA_SHA512) => &signature::RSA_PKCS1_2048_8192_SHA512,
        (_, oid) => {
            return Err(PkiError::InvalidCsr(format!(
                "signature algorithm {oid} does not fit a {key_type:?} key or is not supported"
            )));
        }
    };
    // The der crate decodes strict DER only, so re-encoding gives back the signed bytes.
    let signed = request.info.to_der()?;
    let signature = request
        .signature
        .as_bytes()
        .ok_or_else(|| PkiError::InvalidCsr("the signature has unused bits".into()))?;
    UnparsedPublicKey::new(algorithm, key_bits).verify(&signed, signature).map_err(|_| {
        PkiError::InvalidCsr("the signature does not verify with the CSR's public key".into())
    })?;
    Ok(VerifiedCsr { key_type, spki_der: public_key.to_der()? })
}

fn key_type(public_key: &spki::SubjectPublicKeyInfoOwned) -> Result<CsrKeyType, PkiError> {
    let oid = public_key.algorithm.oid;
    if oid == EC_PUBLIC_KEY {
        let curve = public_key
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
            .ok_or_else(|| PkiError::InvalidCsr("EC key without a named curve".into()))?;
        return match curve {
            P256 => Ok(CsrKeyType::P256),
            P384 => Ok(CsrKeyType::P384),
            other => {
                Err(PkiError::InvalidCsr(format!("EC curve {other} is not supported (use P-256 or P-384)")))
            }
        };
    }
    match oid {
        ED25519 => Ok(CsrKeyType::Ed25519),
        RSA => Ok(CsrKeyType::Rsa),
        other => Err(PkiError::InvalidCsr(format!(
            "key algorithm {other} is not supported (use P-256, P-384, Ed25519 or RSA 2048-8192)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{KeyAlgorithm, SigningKeyPair};

    fn csr_for(alg: KeyAlgorithm) -> (String, Vec<u8>) {
        let (key, _) = SigningKeyPair::generate(alg).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, "mallory");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:masters");
        let csr = params.serialize_request(&key).unwrap();
        (csr.pem().unwrap(), key.spki_der())
    }

    #[test]
    fn a_valid_csr_yields_its_public_key() {
        for alg in [KeyAlgorithm::P256, KeyAlgorithm::P384, KeyAlgorithm::Ed25519] {
            let (pem, spki) = csr_for(alg);
            let verified = verify_csr_pem(&pem).unwrap();
            assert_eq!(verified.spki_der, spki);
        }
    }

    #[test]
    fn a_tampered_csr_is_refused() {
        let (pem, _) = csr_for(KeyAlgorithm::P256);
        let mut der = pem::parse(&pem).unwrap().into_contents();
        // Flip a byte inside the subject (the CN "mallory").
        let at = der.windows(7).position(|w| w == b"mallory").unwrap();
        der[at] ^= 0x01;
        let err = verify_csr_der(&der).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert!(verify_csr_pem("hello").is_err());
        assert!(verify_csr_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
        assert!(verify_csr_der(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
        assert!(verify_csr_der(&[]).is_err());
    }
}
