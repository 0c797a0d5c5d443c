//! Checking CRLs against their CAs before a proxy trusts them: issuer, key identifier, signature,
//! critical extensions, freshness and CRL Number.
//!
//! HAProxy accepts whatever CRL it is handed through its runtime API, expired or forged; the
//! proxy-side puller runs these checks first. Pure: the time and the last accepted numbers are
//! passed in.

use std::collections::BTreeMap;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA384_ASN1, ECDSA_P384_SHA256_ASN1, ECDSA_P384_SHA384_ASN1, ED25519,
    UnparsedPublicKey, VerificationAlgorithm,
};
use der::asn1::{ObjectIdentifier, UintRef};
use der::{Decode, Encode, Reader, SliceReader};
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, SubjectKeyIdentifier};

use super::der_time::from_x509_time;

const CRL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.20");
const AUTHORITY_KEY_IDENTIFIER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const CURVE_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const CURVE_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ED25519_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// Why a CRL bundle was refused. `position` counts from 1, in bundle order.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrlCheckError {
    #[error("the CA bundle holds no certificate")]
    NoAuthority,
    #[error(
        "the CRL bundle holds {crls} CRLs for {cas} CAs: exactly one per CA, in the same order, is needed"
    )]
    Count { cas: usize, crls: usize },
    #[error("CA certificate {position} cannot be used: {detail}")]
    BadAuthority { position: usize, detail: String },
    #[error("CRL {position} is not a valid DER CRL: {detail}")]
    Malformed { position: usize, detail: String },
    #[error("CRL {position} is issued by {found:?}, but CA {position} is {expected:?}")]
    Issuer { position: usize, expected: String, found: String },
    #[error(
        "CRL {position} ({issuer}) names another signing key than its CA's (AKI {found} ≠ SKI {expected})"
    )]
    KeyIdentifier { position: usize, issuer: String, expected: String, found: String },
    #[error("CRL {position} ({issuer}) is signed with an algorithm this check does not accept: {detail}")]
    Algorithm { position: usize, issuer: String, detail: String },
    #[error("the signature of CRL {position} ({issuer}) does not verify with its CA's key")]
    Signature { position: usize, issuer: String },
    #[error("CRL {position} ({issuer}) has a critical extension {oid} that is not understood")]
    CriticalExtension { position: usize, issuer: String, oid: String },
    #[error("CRL {position} ({issuer}) is not valid before {this_update}")]
    NotYetValid { position: usize, issuer: String, this_update: OffsetDateTime },
    #[error("CRL {position} ({issuer}) has no nextUpdate")]
    NoNextUpdate { position: usize, issuer: String },
    #[error("CRL {position} ({issuer}) expired at {next_update}")]
    Expired { position: usize, issuer: String, next_update: OffsetDateTime },
    #[error("CRL {position} ({issuer}) has no usable CRL Number: {detail}")]
    Number { position: usize, issuer: String, detail: String },
    #[error(
        "CRL {position} ({issuer}) has CRL Number {number}, lower than {last} accepted before: refusing to go back"
    )]
    NumberWentBack { position: usize, issuer: String, number: u64, last: u64 },
}

/// A CRL that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedCrl {
    /// The issuer DN, RFC 4514 style.
    pub issuer: String,
    /// The issuing CA's Subject Key Identifier, lowercase hex: the key of the number records.
    pub key_id: String,
    pub number: u64,
    pub this_update: OffsetDateTime,
    pub next_update: OffsetDateTime,
    /// How many certificates it lists.
    pub revoked: usize,
}

/// Check a CRL bundle against a CA bundle: exactly one CRL per CA, in the same order, each issued
/// and signed by its CA, current at `now`, and numbered no lower than the number last accepted for
/// that CA (`last_numbers`, keyed by SKI hex).
pub fn check_bundle(
    cas: &[Vec<u8>],
    crls: &[Vec<u8>],
    now: OffsetDateTime,
    last_numbers: &BTreeMap<String, u64>,
) -> Result<Vec<CheckedCrl>, CrlCheckError> {
    if cas.is_empty() {
        return Err(CrlCheckError::NoAuthority);
    }
    if cas.len() != crls.len() {
        return Err(CrlCheckError::Count { cas: cas.len(), crls: crls.len() });
    }
    let mut checked = Vec::with_capacity(crls.len());
    for (index, (ca, crl)) in cas.iter().zip(crls).enumerate() {
        let position = index + 1;
        let crl = check_crl(position, ca, crl, now)?;
        if let Some(&last) = last_numbers.get(&crl.key_id)
            && crl.number < last
        {
            return Err(CrlCheckError::NumberWentBack {
                position,
                issuer: crl.issuer,
                number: crl.number,
                last,
            });
        }
        checked.push(crl);
    }
    Ok(checked)
}

/// The parts of a CA certificate a CRL is checked against.
struct Authority {
    subject_der: Vec<u8>,
    subject: String,
    key_id: Vec<u8>,
    certificate: Certificate,
}

fn authority(position: usize, der: &[u8]) -> Result<Authority, CrlCheckError> {
    let bad = |detail: String| CrlCheckError::BadAuthority { position, detail };
    let certificate = Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
    let tbs = &certificate.tbs_certificate;
    let key_id = match tbs.get::<SubjectKeyIdentifier>().map_err(|e| bad(e.to_string()))? {
        Some((_, ski)) => ski.0.as_bytes().to_vec(),
        None => return Err(bad("it has no Subject Key Identifier".into())),
    };
    let subject_der = tbs.subject.to_der().map_err(|e| bad(e.to_string()))?;
    let subject = tbs.subject.to_string();
    Ok(Authority { subject_der, subject, key_id, certificate })
}

/// Check one CRL against its CA.
fn check_crl(
    position: usize,
    ca_der: &[u8],
    crl_der: &[u8],
    now: OffsetDateTime,
) -> Result<CheckedCrl, CrlCheckError> {
    let ca = authority(position, ca_der)?;
    let malformed = |detail: String| CrlCheckError::Malformed { position, detail };
    let crl = CertificateList::from_der(crl_der).map_err(|e| malformed(e.to_string()))?;
    let tbs = &crl.tbs_cert_list;
    let issuer = tbs.issuer.to_string();

    if tbs.issuer.to_der().map_err(|e| malformed(e.to_string()))? != ca.subject_der {
        return Err(CrlCheckError::Issuer { position, expected: ca.subject, found: issuer });
    }

    let extensions = tbs.crl_extensions.as_deref().unwrap_or_default();
    let aki = extensions
        .iter()
        .find(|e| e.extn_id == AUTHORITY_KEY_IDENTIFIER)
        .map(|e| AuthorityKeyIdentifier::from_der(e.extn_value.as_bytes()))
        .transpose()
        .map_err(|e| malformed(e.to_string()))?
        .and_then(|aki| aki.key_identifier)
        .map(|id| id.as_bytes().to_vec());
    if aki.as_deref() != Some(ca.key_id.as_slice()) {
        return Err(CrlCheckError::KeyIdentifier {
            position,
            issuer,
            expected: hex::encode(&ca.key_id),
            found: aki.map_or_else(|| "none".into(), hex::encode),
        });
    }

    verify_signature(position, &issuer, &ca.certificate, &crl, crl_der)?;

    if let Some(unknown) = extensions
        .iter()
        .find(|e| e.critical && e.extn_id != CRL_NUMBER && e.extn_id != AUTHORITY_KEY_IDENTIFIER)
    {
        return Err(CrlCheckError::CriticalExtension { position, issuer, oid: unknown.extn_id.to_string() });
    }

    let this_update = from_x509_time(&tbs.this_update);
    if this_update > now {
        return Err(CrlCheckError::NotYetValid { position, issuer, this_update });
    }
    let Some(next_update) = tbs.next_update.as_ref().map(from_x509_time) else {
        return Err(CrlCheckError::NoNextUpdate { position, issuer });
    };
    if now >= next_update {
        return Err(CrlCheckError::Expired { position, issuer, next_update });
    }

    let number = crl_number(extensions).map_err(|detail| CrlCheckError::Number {
        position,
        issuer: issuer.clone(),
        detail,
    })?;
    Ok(CheckedCrl {
        key_id: hex::encode(&ca.key_id),
        issuer,
        number,
        this_update,
        next_update,
        revoked: tbs.revoked_certificates.as_ref().map_or(0, Vec::len),
    })
}

fn crl_number(extensions: &[x509_cert::ext::Extension]) -> Result<u64, String> {
    let extension = extensions.iter().find(|e| e.extn_id == CRL_NUMBER).ok_or("it is missing")?;
    let value = UintRef::from_der(extension.extn_value.as_bytes()).map_err(|e| e.to_string())?;
    let bytes = value.as_bytes();
    let significant = &bytes[bytes.iter().take_while(|b| **b == 0).count()..];
    if significant.len() > 8 {
        return Err("it does not fit in 64 bits".into());
    }
    Ok(significant.iter().fold(0u64, |n, b| n << 8 | u64::from(*b)))
}

/// The signature over the TBSCertList exactly as received, with the CA's public key: ECDSA on
/// P-256 or P-384 with SHA-256 or SHA-384, or Ed25519 (the keys kca makes).
fn verify_signature(
    position: usize,
    issuer: &str,
    ca: &Certificate,
    crl: &CertificateList,
    crl_der: &[u8],
) -> Result<(), CrlCheckError> {
    let unsupported =
        |detail: String| CrlCheckError::Algorithm { position, issuer: issuer.to_string(), detail };
    let signature_oid = crl.signature_algorithm.oid;
    if crl.tbs_cert_list.signature != crl.signature_algorithm {
        return Err(unsupported("the inner and outer signature algorithms differ".into()));
    }
    let spki = &ca.tbs_certificate.subject_public_key_info;
    let algorithm: &'static dyn VerificationAlgorithm = if spki.algorithm.oid == EC_PUBLIC_KEY {
        let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        match (curve, signature_oid) {
            (Some(CURVE_P256), ECDSA_WITH_SHA256) => &ECDSA_P256_SHA256_ASN1,
            (Some(CURVE_P256), ECDSA_WITH_SHA384) => &ECDSA_P256_SHA384_ASN1,
            (Some(CURVE_P384), ECDSA_WITH_SHA384) => &ECDSA_P384_SHA384_ASN1,
            (Some(CURVE_P384), ECDSA_WITH_SHA256) => &ECDSA_P384_SHA256_ASN1,
            (curve, signature) => {
                return Err(unsupported(format!(
                    "an EC key on {} with signature algorithm {signature}",
                    curve.map_or_else(|| "an unnamed curve".into(), |c| c.to_string())
                )));
            }
        }
    } else if spki.algorithm.oid == ED25519_OID && signature_oid == ED25519_OID {
        &ED25519
    } else {
        return Err(unsupported(format!(
            "a {} key with signature algorithm {signature_oid}",
            spki.algorithm.oid
        )));
    };
    let signed =
        tbs_bytes(crl_der).map_err(|e| CrlCheckError::Malformed { position, detail: e.to_string() })?;
    let signature = crl
        .signature
        .as_bytes()
        .ok_or_else(|| CrlCheckError::Signature { position, issuer: issuer.to_string() })?;
    UnparsedPublicKey::new(algorithm, spki.subject_public_key.raw_bytes())
        .verify(signed, signature)
        .map_err(|_| CrlCheckError::Signature { position, issuer: issuer.to_string() })
}

/// The TBSCertList of a DER CRL, byte for byte as signed (not re-encoded).
fn tbs_bytes(crl_der: &[u8]) -> der::Result<&[u8]> {
    let mut reader = SliceReader::new(crl_der)?;
    let outer = der::Header::decode(&mut reader)?;
    outer.tag.assert_eq(der::Tag::Sequence)?;
    reader.tlv_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::KeyAlgorithm;
    use crate::pki::ca::{AuthorityIdentity, NewAuthority, create_authority};
    use crate::pki::crl::{CrlWindow, RevocationReason, RevokedEntry, sign_crl};
    use crate::pki::{AuthorityKind, Serial};
    use time::Duration;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-25 12:00:00 UTC);

    fn ca(generation: i32, algorithm: KeyAlgorithm) -> NewAuthority {
        let identity = AuthorityIdentity {
            cluster_name: "prod",
            cluster_id: "id1",
            kind: AuthorityKind::Operators,
            generation,
        };
        create_authority(&identity, algorithm, NOW - Duration::days(30)).unwrap()
    }

    fn crl(ca: &NewAuthority, number: u64, this_update: OffsetDateTime) -> Vec<u8> {
        let window = CrlWindow { number, this_update, next_update: this_update + Duration::days(7) };
        let entry = RevokedEntry {
            serial: Serial::random().unwrap(),
            revoked_at: this_update,
            reason: RevocationReason::KeyCompromise,
        };
        sign_crl(&ca.signer, window, &[entry]).unwrap()
    }

    /// Re-encode a CRL after `change`, signed again by `signer` (or with its old signature).
    fn altered(
        der: &[u8],
        signer: Option<&NewAuthority>,
        change: impl FnOnce(&mut CertificateList),
    ) -> Vec<u8> {
        let mut list = CertificateList::from_der(der).unwrap();
        change(&mut list);
        if let Some(signer) = signer {
            let tbs = list.tbs_cert_list.to_der().unwrap();
            let signature = signer.signer.key().sign_bytes(&tbs).unwrap();
            list.signature = der::asn1::BitString::from_bytes(&signature).unwrap();
        }
        list.to_der().unwrap()
    }

    fn check(cas: &[&NewAuthority], crls: &[Vec<u8>]) -> Result<Vec<CheckedCrl>, CrlCheckError> {
        check_with(cas, crls, &BTreeMap::new())
    }

    fn check_with(
        cas: &[&NewAuthority],
        crls: &[Vec<u8>],
        last: &BTreeMap<String, u64>,
    ) -> Result<Vec<CheckedCrl>, CrlCheckError> {
        let cas: Vec<Vec<u8>> = cas.iter().map(|c| c.certificate_der.clone()).collect();
        check_bundle(&cas, crls, NOW, last)
    }

    #[test]
    fn crls_of_every_key_type_kca_makes_pass() {
        for algorithm in [KeyAlgorithm::P256, KeyAlgorithm::P384, KeyAlgorithm::Ed25519] {
            let (one, two) = (ca(1, algorithm), ca(2, algorithm));
            let crls = [crl(&one, 4, NOW - Duration::hours(1)), crl(&two, 9, NOW - Duration::minutes(5))];
            let checked = check(&[&one, &two], &crls).unwrap();
            assert_eq!(checked.len(), 2, "{algorithm}");
            assert_eq!(checked[0].number, 4);
            assert_eq!(checked[1].number, 9);
            assert_eq!(checked[0].key_id, hex::encode(one.signer.key_id()));
            assert_eq!(checked[0].revoked, 1);
            assert_eq!(checked[1].issuer, two.signer.subject_text());
        }
    }

    #[test]
    fn a_crl_of_another_key_under_the_same_name_is_refused() {
        let real = ca(1, KeyAlgorithm::P256);
        let impostor = ca(1, KeyAlgorithm::P256);
        assert_eq!(real.signer.subject(), impostor.signer.subject());
        let forged = crl(&impostor, 5, NOW);
        assert!(matches!(check(&[&real], &[forged]), Err(CrlCheckError::KeyIdentifier { position: 1, .. })));

        // The same, with the real CA's key identifier written in: the signature gives it away.
        let real_id = real.signer.key_id().to_vec();
        let forged = altered(&crl(&impostor, 5, NOW), Some(&impostor), |list| {
            for extension in list.tbs_cert_list.crl_extensions.iter_mut().flatten() {
                if extension.extn_id == AUTHORITY_KEY_IDENTIFIER {
                    let aki = AuthorityKeyIdentifier {
                        key_identifier: Some(der::asn1::OctetString::new(real_id.clone()).unwrap()),
                        authority_cert_issuer: None,
                        authority_cert_serial_number: None,
                    };
                    extension.extn_value = der::asn1::OctetString::new(aki.to_der().unwrap()).unwrap();
                }
            }
        });
        let err = check(&[&real], &[forged]).unwrap_err();
        assert!(matches!(err, CrlCheckError::Signature { position: 1, .. }), "{err}");
    }

    #[test]
    fn a_tampered_crl_is_refused() {
        let one = ca(1, KeyAlgorithm::P384);
        let tampered = altered(&crl(&one, 5, NOW), None, |list| {
            list.tbs_cert_list.revoked_certificates = None;
        });
        assert!(matches!(check(&[&one], &[tampered]), Err(CrlCheckError::Signature { .. })));
        let garbage = b"not a CRL".to_vec();
        assert!(matches!(check(&[&one], &[garbage]), Err(CrlCheckError::Malformed { .. })));
    }

    #[test]
    fn stale_and_future_crls_are_refused() {
        let one = ca(1, KeyAlgorithm::Ed25519);
        let expired = crl(&one, 5, NOW - Duration::days(7));
        assert!(matches!(check(&[&one], &[expired]), Err(CrlCheckError::Expired { .. })));
        let last_second = crl(&one, 5, NOW - Duration::days(7) + Duration::seconds(1));
        assert!(check(&[&one], &[last_second]).is_ok());
        let future = crl(&one, 5, NOW + Duration::minutes(1));
        assert!(matches!(check(&[&one], &[future]), Err(CrlCheckError::NotYetValid { .. })));
        let open_ended =
            altered(&crl(&one, 5, NOW), Some(&one), |list| list.tbs_cert_list.next_update = None);
        assert!(matches!(check(&[&one], &[open_ended]), Err(CrlCheckError::NoNextUpdate { .. })));
    }

    #[test]
    fn crl_numbers_may_stay_but_never_go_back() {
        let one = ca(1, KeyAlgorithm::P256);
        let key = hex::encode(one.signer.key_id());
        let last = BTreeMap::from([(key, 7)]);
        assert!(check_with(&[&one], &[crl(&one, 7, NOW)], &last).is_ok());
        assert!(check_with(&[&one], &[crl(&one, 8, NOW)], &last).is_ok());
        let err = check_with(&[&one], &[crl(&one, 6, NOW)], &last).unwrap_err();
        assert!(matches!(err, CrlCheckError::NumberWentBack { number: 6, last: 7, .. }), "{err}");
        // Numbers of other CAs do not interfere.
        let other = ca(2, KeyAlgorithm::P256);
        assert!(check_with(&[&other], &[crl(&other, 1, NOW)], &last).is_ok());
    }

    #[test]
    fn one_crl_per_ca_in_bundle_order() {
        let (one, two) = (ca(1, KeyAlgorithm::P256), ca(2, KeyAlgorithm::P256));
        let (crl_one, crl_two) = (crl(&one, 1, NOW), crl(&two, 1, NOW));
        assert!(matches!(
            check(&[&one, &two], std::slice::from_ref(&crl_one)),
            Err(CrlCheckError::Count { cas: 2, crls: 1 })
        ));
        assert!(matches!(
            check(&[&one, &two], &[crl_two.clone(), crl_one.clone()]),
            Err(CrlCheckError::Issuer { position: 1, .. })
        ));
        assert!(matches!(check(&[], &[]), Err(CrlCheckError::NoAuthority)));
        assert!(check(&[&one, &two], &[crl_one, crl_two]).is_ok());
    }

    #[test]
    fn unknown_critical_extensions_are_refused() {
        let one = ca(1, KeyAlgorithm::P256);
        let delta = altered(&crl(&one, 5, NOW), Some(&one), |list| {
            let indicator = x509_cert::ext::Extension {
                extn_id: ObjectIdentifier::new_unwrap("2.5.29.27"),
                critical: true,
                extn_value: der::asn1::OctetString::new(vec![2, 1, 4]).unwrap(),
            };
            list.tbs_cert_list.crl_extensions.get_or_insert_with(Vec::new).push(indicator);
        });
        let err = check(&[&one], &[delta]).unwrap_err();
        assert!(matches!(&err, CrlCheckError::CriticalExtension { oid, .. } if oid == "2.5.29.27"), "{err}");
    }
}
