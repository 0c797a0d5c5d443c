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
    // Before the signature check, whose RSA verifier refuses small keys with an error that would
    // blame the signature.
    if key_type == CsrKeyType::Rsa {
        check_rsa_public_key(key_bits)?;
    }
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

/// RSA keys kca certifies: a modulus of 2048 to 8192 bits (what the signature check supports)
/// and the public exponent 65537. Small exponents (3) are what the attacks on PKCS #1 v1.5
/// signatures and unpadded encryption exploit, and other CAs refuse them too.
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;
const RSA_EXPONENT: [u8; 3] = [0x01, 0x00, 0x01];

/// Check the PKCS #1 `RSAPublicKey` (modulus, exponent) of an RSA SubjectPublicKeyInfo.
fn check_rsa_public_key(key_bits: &[u8]) -> Result<(), PkiError> {
    use der::Reader;
    use der::asn1::UintRef;

    let malformed = |e: der::Error| PkiError::InvalidCsr(format!("malformed RSA public key: {e}"));
    let mut reader = der::SliceReader::new(key_bits).map_err(malformed)?;
    let (modulus, exponent) = reader
        .sequence(|key| Ok((UintRef::decode(key)?, UintRef::decode(key)?)))
        .and_then(|parts| reader.finish(parts))
        .map_err(malformed)?;
    let bits = bit_length(modulus.as_bytes());
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
        return Err(PkiError::InvalidCsr(format!(
            "RSA keys need a modulus of at least {RSA_MIN_BITS} bits (and at most {RSA_MAX_BITS}); \
             this one has {bits} bits"
        )));
    }
    if exponent.as_bytes() != RSA_EXPONENT {
        let found = match exponent.as_bytes() {
            bytes if bytes.len() <= 8 => {
                bytes.iter().fold(0u64, |value, byte| (value << 8) | u64::from(*byte)).to_string()
            }
            bytes => format!("a {}-bit number", bit_length(bytes)),
        };
        return Err(PkiError::InvalidCsr(format!(
            "RSA keys need a public exponent of 65537; this one has {found}"
        )));
    }
    Ok(())
}

/// Bits of a big-endian unsigned integer without leading zero bytes.
fn bit_length(bytes: &[u8]) -> usize {
    bytes.first().map_or(0, |first| bytes.len() * 8 - first.leading_zeros() as usize)
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
            "key algorithm {other} is not supported (use P-256, P-384, Ed25519 or RSA 2048-8192 with e = 65537)"
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

    /// `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -pkeyopt rsa_keygen_pubexp:3`,
    /// then `openssl req -new -sha256 -subj /CN=mallory`.
    const RSA_2048_E3_CSR: &str = "\
-----BEGIN CERTIFICATE REQUEST-----
MIICVTCCAT0CAQAwEjEQMA4GA1UEAwwHbWFsbG9yeTCCASAwDQYJKoZIhvcNAQEB
BQADggENADCCAQgCggEBAMLydY/n4uyQLEu7ETmkynFIc3Hjavzx1dUAaYdssQ+J
N/I+fMHkPbsqodegOIj3s6lfNxrRlAauMuKlToZxIaim/t9zoUXUzF98kK5bFVYY
/60LN2zhqPMs2xx8q6nw0LgCqOhVRq0QB7E/oMm4sRzY2dNZT01tyXu5u0zTwI3U
ZxTzjKsErwTJ+tTHS2tiIgKWvxKxo8KNM0rIty3MHqShRNPDopiD+7muezrmrg7c
XJbezvLzXgyEV7zJzvoKbiMbxiEhOnWV7EKbOJXHslJsiU6cnMxJ+gtnHzTYLktJ
AodSqTP1iA+cR26gK4pxPVtp2adEPZ7Zo9gP84za1g8CAQOgADANBgkqhkiG9w0B
AQsFAAOCAQEAaK0e8gqGl7XcJt8TLIrWrYkTDOfp7g/Z4ltDFe/hTgMBMqYAGWuf
oj478Q6iHICap/76aWlS4nEJHNvjb+mW+i30sU3oV+kFmKrzMcjlvqqjiHhjp7w5
zMOJRK+CxlDoPwkGRHWZLvGupor4V+KuTXRb0FifGoZi/qUEzkpO6GzQ5gIwXjyv
+cYAIID5z17GTjzeLsWdVZ1XiBKUBQLOFbkqgG+CmRzjSsl1dH24qOqW2W5N52Tt
kazGDu/5bQ9ZUqf9QGQ8YteE3eJMRDVA9SjBTdg/CcmZlaoGQdf9cIej/ra02ATY
cjDRaXBaA+fU4V5wdq2wbrviV8qnVSlBkw==
-----END CERTIFICATE REQUEST-----";

    /// `openssl genrsa 1024`, then `openssl req -new -sha256 -subj /CN=mallory`.
    const RSA_1024_CSR: &str = "\
-----BEGIN CERTIFICATE REQUEST-----
MIIBUTCBuwIBADASMRAwDgYDVQQDDAdtYWxsb3J5MIGfMA0GCSqGSIb3DQEBAQUA
A4GNADCBiQKBgQDqwBjwqb58PmqUNrbDA/d9IUJ5lIzW7dhLRzbmqWae9i71Vtpj
LuwMSCWSJhiT+8+/xKDG+hxWkvlc2giboZwOznW9b+UP0eis52qY8HoPMXqG9PyP
x0UW2sZ5HjEKN72AbIyWw45IcRh/Bkr74ueTm+MWsGQr2kWOikXxVgHBkQIDAQAB
oAAwDQYJKoZIhvcNAQELBQADgYEAw6admBzuP6ZztQiFk4wd3JBoaQJfj8kz97W3
nMzqerv7hRAEBzLtWHTwvLmKmaBMvBvYB5MkJ/yu9b+JwZafj/wmD8Eg1FVT/O7D
gVdaOr47l/i8OO8mtOSi54B7s7JHsRoidhFrDAxJTShZy305HZuL0DJSGXmz91ho
Myuoi/s=
-----END CERTIFICATE REQUEST-----";

    #[test]
    fn weak_rsa_keys_are_refused_for_what_they_are() {
        let err = verify_csr_pem(RSA_1024_CSR).expect_err("RSA-1024 is refused").to_string();
        assert!(err.contains("at least 2048 bits"), "{err}");
        assert!(!err.contains("does not verify"), "{err}");
        let err = verify_csr_pem(RSA_2048_E3_CSR).expect_err("e = 3 is refused").to_string();
        assert!(err.contains("public exponent of 65537"), "{err}");
    }

    /// DER of a PKCS #1 RSAPublicKey with a modulus of `bits` bits and exponent `exponent`.
    fn rsa_public_key(bits: usize, exponent: &[u8]) -> Vec<u8> {
        fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            match content.len() {
                len @ 0..0x80 => out.push(len as u8),
                len @ 0x80..0x100 => out.extend([0x81, len as u8]),
                len => out.extend([0x82, (len >> 8) as u8, len as u8]),
            }
            out.extend(content);
            out
        }
        fn integer(magnitude: &[u8]) -> Vec<u8> {
            let mut content = magnitude.to_vec();
            if content[0] & 0x80 != 0 {
                content.insert(0, 0);
            }
            tlv(0x02, &content)
        }
        let mut modulus = vec![0xA5u8; bits.div_ceil(8)];
        modulus[0] = 1 << ((bits - 1) % 8);
        let mut fields = integer(&modulus);
        fields.extend(integer(exponent));
        tlv(0x30, &fields)
    }

    #[test]
    fn rsa_keys_need_2048_to_8192_bits_and_exponent_65537() {
        for bits in [2048, 3072, 4096, 8192] {
            assert!(check_rsa_public_key(&rsa_public_key(bits, &[1, 0, 1])).is_ok(), "{bits}");
        }
        for bits in [512, 1024, 2047, 8193, 16384] {
            let err = check_rsa_public_key(&rsa_public_key(bits, &[1, 0, 1])).unwrap_err().to_string();
            assert!(
                err.contains(&format!("at least 2048 bits (and at most 8192); this one has {bits} bits")),
                "{err}"
            );
        }
        for (exponent, shown) in
            [(&[3u8][..], "3"), (&[17], "17"), (&[1, 0, 3], "65539"), (&[0xFF; 16], "a 128-bit number")]
        {
            let err = check_rsa_public_key(&rsa_public_key(2048, exponent)).unwrap_err().to_string();
            assert!(
                err.ends_with(&format!("RSA keys need a public exponent of 65537; this one has {shown}")),
                "{err}"
            );
        }
        for garbage in [&[][..], &[0x30, 0x00], &[0x02, 0x01, 0x03], &[0x30, 0x03, 0x02, 0x01, 0x03]] {
            let err = check_rsa_public_key(garbage).unwrap_err().to_string();
            assert!(err.contains("malformed RSA public key"), "{err}");
        }
        let mut trailing = rsa_public_key(2048, &[1, 0, 1]);
        trailing.push(0);
        assert!(check_rsa_public_key(&trailing).is_err());
    }

    #[test]
    fn an_rsa_csr_with_a_good_key_verifies() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let csr = rcgen::CertificateParams::default().serialize_request(&key).unwrap();
        assert_eq!(verify_csr_pem(&csr.pem().unwrap()).unwrap().key_type, CsrKeyType::Rsa);
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert!(verify_csr_pem("hello").is_err());
        assert!(verify_csr_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
        assert!(verify_csr_der(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
        assert!(verify_csr_der(&[]).is_err());
    }
}
