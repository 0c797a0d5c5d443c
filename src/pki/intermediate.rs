//! An authority as an intermediate under the organisation's root: kca makes the key and a CSR,
//! the operator has it signed offline, and kca checks what comes back before it signs with it.

use der::{Decode, Encode};
use rcgen::CertificateParams;
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier};
use zeroize::Zeroizing;

use super::ca::AuthorityIdentity;
use super::{CaSigner, KeyAlgorithm, PkiError, SigningKeyPair, der_time};

/// A key for an intermediate and the CSR to have it signed.
pub struct IntermediateRequest {
    pub pkcs8: Zeroizing<Vec<u8>>,
    pub csr_der: Vec<u8>,
}

/// A fresh key and a CSR whose subject is the authority's DN (unique per cluster, kind and
/// generation), asking for CA:TRUE and keyCertSign + cRLSign.
pub fn request_intermediate(
    identity: &AuthorityIdentity<'_>,
    algorithm: KeyAlgorithm,
) -> Result<IntermediateRequest, PkiError> {
    let (key, pkcs8) = SigningKeyPair::generate(algorithm)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = identity.distinguished_name()?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let csr = params.serialize_request(&key)?;
    Ok(IntermediateRequest { pkcs8, csr_der: csr.der().to_vec() })
}

/// A signed intermediate, checked: what to serve and sign with.
pub struct AcceptedIntermediate {
    pub certificate_der: Vec<u8>,
    /// Its issuers, nearest first (up to the root when it was given).
    pub chain_der: Vec<Vec<u8>>,
    pub signer: CaSigner,
}

fn refuse(field: &'static str, detail: impl Into<String>) -> PkiError {
    PkiError::ImportRefused { field, detail: detail.into() }
}

fn certificates(text: &str, field: &'static str) -> Result<Vec<Vec<u8>>, PkiError> {
    let blocks = pem::parse_many(text).map_err(|_| refuse(field, "not PEM certificates"))?;
    if blocks.is_empty() || blocks.iter().any(|b| b.tag() != "CERTIFICATE") {
        return Err(refuse(field, "expected PEM CERTIFICATE blocks"));
    }
    Ok(blocks.into_iter().map(|b| b.into_contents()).collect())
}

/// Check the certificate the organisation's CA signed for a pending key: it carries that key, is a
/// CA with keyCertSign and cRLSign and a Subject Key Identifier, is valid now, and was signed by the
/// first certificate of `chain_pem` (the issuer; more may follow up to the root), each link's
/// signature checked.
pub fn accept_intermediate(
    certificate_pem: &str,
    chain_pem: &str,
    algorithm: KeyAlgorithm,
    pkcs8: &[u8],
    now: OffsetDateTime,
) -> Result<AcceptedIntermediate, PkiError> {
    let [certificate_der] = <[Vec<u8>; 1]>::try_from(certificates(certificate_pem, "certificate_pem")?)
        .map_err(|_| refuse("certificate_pem", "expected exactly one certificate: the intermediate"))?;
    let chain_der = certificates(chain_pem, "chain_pem")?;
    let certificate = Certificate::from_der(&certificate_der)
        .map_err(|e| refuse("certificate_pem", format!("not an X.509 certificate: {e}")))?;
    let tbs = &certificate.tbs_certificate;
    let key = SigningKeyPair::from_pkcs8(algorithm, pkcs8)?;
    if tbs.subject_public_key_info.to_der()? != key.spki_der() {
        return Err(refuse("certificate_pem", "the certificate is not for the key of this request"));
    }
    check_ca(&certificate, "certificate_pem", now)?;
    let usages = tbs.get::<KeyUsage>()?.map(|(_, ku)| ku.0).unwrap_or_default();
    if !usages.contains(KeyUsages::CRLSign) {
        return Err(refuse(
            "certificate_pem",
            "the keyUsage lacks cRLSign: proxies would refuse this CA's CRLs; have it signed with keyCertSign and cRLSign",
        ));
    }
    if tbs.get::<SubjectKeyIdentifier>()?.is_none() {
        return Err(refuse("certificate_pem", "the certificate has no Subject Key Identifier"));
    }
    let mut child = certificate.clone();
    for (i, issuer_der) in chain_der.iter().enumerate() {
        let issuer = Certificate::from_der(issuer_der)
            .map_err(|e| refuse("chain_pem", format!("certificate {i} is not X.509: {e}")))?;
        check_ca(&issuer, "chain_pem", now)?;
        if child.tbs_certificate.issuer != issuer.tbs_certificate.subject {
            return Err(refuse(
                "chain_pem",
                format!("certificate {i} is not the issuer of the one before it (subject and issuer differ)"),
            ));
        }
        verify_signed_by(&child, &issuer)
            .map_err(|detail| refuse("chain_pem", format!("certificate {i}: {detail}")))?;
        child = issuer;
    }
    let signer = CaSigner::load(&certificate_der, algorithm, pkcs8)
        .map_err(|e| refuse("certificate_pem", format!("kca cannot sign under this certificate: {e}")))?;
    Ok(AcceptedIntermediate { certificate_der, chain_der, signer })
}

fn check_ca(certificate: &Certificate, field: &'static str, now: OffsetDateTime) -> Result<(), PkiError> {
    let tbs = &certificate.tbs_certificate;
    let name = tbs.subject.to_string();
    if !tbs.get::<BasicConstraints>()?.is_some_and(|(_, bc)| bc.ca) {
        return Err(refuse(field, format!("{name} is not a CA certificate")));
    }
    if !tbs.get::<KeyUsage>()?.is_some_and(|(_, ku)| ku.0.contains(KeyUsages::KeyCertSign)) {
        return Err(refuse(field, format!("the keyUsage of {name} lacks keyCertSign")));
    }
    if der_time::from_x509_time(&tbs.validity.not_after) <= now {
        return Err(refuse(field, format!("{name} has expired")));
    }
    if der_time::from_x509_time(&tbs.validity.not_before) > now {
        return Err(refuse(field, format!("{name} is not valid yet")));
    }
    Ok(())
}

/// Check `child`'s signature with `issuer`'s public key.
fn verify_signed_by(child: &Certificate, issuer: &Certificate) -> Result<(), String> {
    use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
    let spki = &issuer.tbs_certificate.subject_public_key_info;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok())
        .map(|oid| oid.to_string());
    let p384 = curve.as_deref() == Some("1.3.132.0.34");
    let algorithm: &'static dyn VerificationAlgorithm =
        match child.signature_algorithm.oid.to_string().as_str() {
            "1.2.840.10045.4.3.2" if p384 => &signature::ECDSA_P384_SHA256_ASN1,
            "1.2.840.10045.4.3.2" => &signature::ECDSA_P256_SHA256_ASN1,
            "1.2.840.10045.4.3.3" if p384 => &signature::ECDSA_P384_SHA384_ASN1,
            "1.2.840.10045.4.3.3" => &signature::ECDSA_P256_SHA384_ASN1,
            "1.2.840.113549.1.1.11" => &signature::RSA_PKCS1_2048_8192_SHA256,
            "1.2.840.113549.1.1.12" => &signature::RSA_PKCS1_2048_8192_SHA384,
            "1.2.840.113549.1.1.13" => &signature::RSA_PKCS1_2048_8192_SHA512,
            "1.3.101.112" => &signature::ED25519,
            other => return Err(format!("unsupported signature algorithm {other}")),
        };
    let tbs = child.tbs_certificate.to_der().map_err(|e| e.to_string())?;
    let signature = child.signature.as_bytes().ok_or("the signature is not whole bytes")?;
    UnparsedPublicKey::new(algorithm, spki.subject_public_key.raw_bytes())
        .verify(&tbs, signature)
        .map_err(|_| "its signature does not verify with the next certificate's key".to_string())
}

/// The PEM of a chain, nearest issuer first.
pub fn chain_pem(chain_der: &[Vec<u8>]) -> String {
    chain_der.iter().map(|der| super::to_pem("CERTIFICATE", der)).collect()
}
