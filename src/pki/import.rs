//! Importing an existing CA (kubeadm's `ca.crt` + `ca.key`, ...): the checks, the key in PKCS#8
//! form for sealing, and the certificate kca serves for it.
//!
//! kubeadm's CAs carry keyUsage `digitalSignature, keyEncipherment, keyCertSign` and no `cRLSign`,
//! and OpenSSL (so HAProxy and nginx) refuses a CRL whose issuer certificate lacks `cRLSign`
//! (`X509_V_ERR_KEYUSAGE_NO_CRL_SIGN`). Such a CA is **re-certified**: a new self-signed
//! certificate for the same key, with the same subject (byte for byte), the same Subject Key
//! Identifier, the same validity and basic constraints, and `cRLSign` added. Every certificate the
//! original signed verifies under it, and everything kca signs afterwards verifies under the
//! original `ca.crt` too (same name, same key, same key identifier); kca serves the re-certified
//! one in bundles so that proxies can check its CRLs.

use der::asn1::{BitString, OctetString};
use der::{Decode, Encode};
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::certificate::{TbsCertificate, Version};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::ext::{AsExtension, Extension};
use x509_cert::serial_number::SerialNumber;
use zeroize::Zeroizing;

use super::{CaSigner, KeyAlgorithm, PkiError, Serial, SigningKeyPair, der_time, key_identifier};

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_ED25519: &str = "1.3.101.112";

/// A CA ready to be stored: what to serve, its key (PKCS#8, to be sealed) and its signer.
pub struct ImportedAuthority {
    /// The certificate kca serves and signs under: the original, or its re-certification.
    pub certificate_der: Vec<u8>,
    /// SHA-256 fingerprint of the certificate given (for the audit trail).
    pub original_fingerprint: String,
    /// Whether the original lacked `cRLSign` (or a Subject Key Identifier) and was re-certified.
    pub recertified: bool,
    pub algorithm: KeyAlgorithm,
    pub pkcs8: Zeroizing<Vec<u8>>,
    pub signer: CaSigner,
}

impl std::fmt::Debug for ImportedAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportedAuthority")
            .field("original_fingerprint", &self.original_fingerprint)
            .field("recertified", &self.recertified)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

fn refuse(field: &'static str, detail: impl Into<String>) -> PkiError {
    PkiError::ImportRefused { field, detail: detail.into() }
}

/// Check an existing CA and its key, at `now`: a self-signed CA certificate (CA:TRUE, keyUsage
/// with keyCertSign) that is valid now, a key that belongs to it, of an algorithm kca signs with
/// (ECDSA P-256/P-384, Ed25519, RSA 2048-8192). Keys may be PKCS#8, PKCS#1 (`RSA PRIVATE KEY`,
/// kubeadm's RSA form) or SEC1 (`EC PRIVATE KEY`, kubeadm's ECDSA form). Refusals name the field
/// at fault and never quote the key.
pub fn import_authority(
    certificate_pem: &str,
    private_key_pem: &str,
    now: OffsetDateTime,
) -> Result<ImportedAuthority, PkiError> {
    let original_der = single_certificate(certificate_pem)?;
    let certificate = Certificate::from_der(&original_der)
        .map_err(|e| refuse("certificate_pem", format!("not an X.509 certificate: {e}")))?;
    let tbs = &certificate.tbs_certificate;
    let bad_extension = |e: der::Error| refuse("certificate_pem", format!("unreadable extension: {e}"));
    match tbs.get::<BasicConstraints>().map_err(bad_extension)? {
        Some((_, bc)) if bc.ca => {}
        _ => {
            return Err(refuse(
                "certificate_pem",
                "not a CA certificate (basicConstraints CA:TRUE is missing)",
            ));
        }
    }
    let usages = match tbs.get::<KeyUsage>().map_err(bad_extension)? {
        Some((_, ku)) if ku.0.contains(KeyUsages::KeyCertSign) => ku.0,
        _ => return Err(refuse("certificate_pem", "the CA certificate's keyUsage lacks keyCertSign")),
    };
    let not_before = der_time::from_x509_time(&tbs.validity.not_before);
    let not_after = der_time::from_x509_time(&tbs.validity.not_after);
    if not_after <= now {
        return Err(refuse("certificate_pem", "the CA certificate has expired"));
    }
    if not_before > now {
        return Err(refuse("certificate_pem", "the CA certificate is not valid yet"));
    }
    if tbs.issuer != tbs.subject {
        return Err(refuse(
            "certificate_pem",
            "only self-signed CAs can be imported (for an intermediate under your own root, use the CSR flow)",
        ));
    }
    let algorithm = algorithm_of(tbs)?;
    let pkcs8 = private_key_pkcs8(private_key_pem, algorithm)?;
    let key = SigningKeyPair::from_pkcs8(algorithm, &pkcs8)
        .map_err(|_| refuse("private_key_pem", "the key could not be loaded"))?;
    if tbs.subject_public_key_info.to_der()? != key.spki_der() {
        return Err(refuse("private_key_pem", "the private key does not belong to the certificate"));
    }
    let original_ski = tbs.get::<SubjectKeyIdentifier>().map_err(bad_extension)?.map(|(_, ski)| ski);
    let recertify = !usages.contains(KeyUsages::CRLSign) || original_ski.is_none();
    let certificate_der = if recertify {
        recertified(&certificate, usages | KeyUsages::CRLSign, original_ski, &key)?
    } else {
        original_der.clone()
    };
    let signer = CaSigner::load(&certificate_der, algorithm, &pkcs8)
        .map_err(|e| refuse("certificate_pem", format!("kca cannot sign under this certificate: {e}")))?;
    Ok(ImportedAuthority {
        original_fingerprint: super::fingerprint_sha256(&original_der),
        certificate_der,
        recertified: recertify,
        algorithm,
        pkcs8,
        signer,
    })
}

fn single_certificate(text: &str) -> Result<Vec<u8>, PkiError> {
    let blocks = pem::parse_many(text)
        .map_err(|_| refuse("certificate_pem", "not PEM: expected one CERTIFICATE block"))?;
    match blocks.as_slice() {
        [one] if one.tag() == "CERTIFICATE" => Ok(one.contents().to_vec()),
        _ => Err(refuse(
            "certificate_pem",
            "expected exactly one PEM CERTIFICATE block: the CA certificate alone",
        )),
    }
}

/// The key algorithm a certificate's public key calls for, if kca signs with it.
fn algorithm_of(tbs: &TbsCertificate) -> Result<KeyAlgorithm, PkiError> {
    let spki = &tbs.subject_public_key_info;
    let oid = spki.algorithm.oid.to_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok())
        .map(|oid| oid.to_string());
    match (oid.as_str(), curve.as_deref()) {
        (OID_RSA, _) => Ok(KeyAlgorithm::Rsa),
        (OID_EC, Some(OID_P256)) => Ok(KeyAlgorithm::P256),
        (OID_EC, Some(OID_P384)) => Ok(KeyAlgorithm::P384),
        (OID_ED25519, _) => Ok(KeyAlgorithm::Ed25519),
        (OID_EC, _) => Err(refuse(
            "certificate_pem",
            "unsupported elliptic curve: kca signs with P-256, P-384, Ed25519 or RSA keys",
        )),
        _ => Err(refuse(
            "certificate_pem",
            format!("unsupported key algorithm {oid}: kca signs with P-256, P-384, Ed25519 or RSA keys"),
        )),
    }
}

/// Read the key (PKCS#8, PKCS#1 or SEC1 PEM) and answer it as PKCS#8 v1.
pub(crate) fn private_key_pkcs8(text: &str, algorithm: KeyAlgorithm) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
        RsaKeyPair,
    };
    let blocks = pem::parse_many(text).map_err(|_| refuse("private_key_pem", "not a PEM private key"))?;
    let [block] = blocks.as_slice() else {
        return Err(refuse("private_key_pem", "expected exactly one PEM private key block"));
    };
    let der = Zeroizing::new(block.contents().to_vec());
    let wrong =
        || refuse("private_key_pem", format!("not a usable {} private key", algorithm_name(algorithm)));
    let pkcs8: Vec<u8> = match (block.tag(), algorithm) {
        ("ENCRYPTED PRIVATE KEY", _) => {
            return Err(refuse("private_key_pem", "the key is encrypted: give it decrypted"));
        }
        ("PRIVATE KEY" | "RSA PRIVATE KEY", KeyAlgorithm::Rsa) => {
            let key = if block.tag() == "RSA PRIVATE KEY" {
                RsaKeyPair::from_der(&der)
            } else {
                RsaKeyPair::from_pkcs8(&der)
            }
            .map_err(|_| {
                refuse(
                    "private_key_pem",
                    "not a usable RSA private key (kca signs with RSA keys of 2048 to 8192 bits)",
                )
            })?;
            let encoded: Pkcs8V1Der<'static> = key.as_der().map_err(|_| wrong())?;
            encoded.as_ref().to_vec()
        }
        ("PRIVATE KEY" | "EC PRIVATE KEY", KeyAlgorithm::P256 | KeyAlgorithm::P384) => {
            let signing = if algorithm == KeyAlgorithm::P256 {
                &ECDSA_P256_SHA256_ASN1_SIGNING
            } else {
                &ECDSA_P384_SHA384_ASN1_SIGNING
            };
            let key = EcdsaKeyPair::from_private_key_der(signing, &der).map_err(|_| wrong())?;
            key.to_pkcs8v1().map_err(|_| wrong())?.as_ref().to_vec()
        }
        ("PRIVATE KEY", KeyAlgorithm::Ed25519) => {
            let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|_| wrong())?;
            let encoded: Pkcs8V1Der<'static> = key.as_der().map_err(|_| wrong())?;
            encoded.as_ref().to_vec()
        }
        _ => return Err(wrong()),
    };
    Ok(Zeroizing::new(pkcs8))
}

fn algorithm_name(algorithm: KeyAlgorithm) -> &'static str {
    match algorithm {
        KeyAlgorithm::P256 => "ECDSA P-256",
        KeyAlgorithm::P384 => "ECDSA P-384",
        KeyAlgorithm::Ed25519 => "Ed25519",
        KeyAlgorithm::Rsa => "RSA",
    }
}

/// The same CA certificate again with `usages` (cRLSign added) and a Subject Key Identifier (the
/// original's, or RFC 7093's when it had none): same subject and issuer bytes, key, validity and
/// basic constraints; a new random serial, since two certificates must not share issuer and serial.
fn recertified(
    original: &Certificate,
    usages: der::flagset::FlagSet<KeyUsages>,
    ski: Option<SubjectKeyIdentifier>,
    key: &SigningKeyPair,
) -> Result<Vec<u8>, PkiError> {
    let tbs = &original.tbs_certificate;
    let subject = &tbs.subject;
    let ski = match ski {
        Some(ski) => ski,
        None => SubjectKeyIdentifier(OctetString::new(key_identifier(&key.spki_der())?)?),
    };
    let (_, constraints) = tbs.get::<BasicConstraints>()?.expect("checked by the caller");
    let extensions: Vec<Extension> = vec![
        constraints.to_extension(subject, &[])?,
        KeyUsage(usages).to_extension(subject, &[])?,
        ski.to_extension(subject, &[])?,
    ];
    let signature_algorithm = key.algorithm().signature_algorithm();
    let serial = Serial::random()?;
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(serial.as_bytes())?,
        signature: signature_algorithm.clone(),
        issuer: tbs.issuer.clone(),
        validity: tbs.validity,
        subject: subject.clone(),
        subject_public_key_info: tbs.subject_public_key_info.clone(),
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let signature = key.sign_bytes(&tbs.to_der()?)?;
    let certificate = Certificate {
        tbs_certificate: tbs,
        signature_algorithm,
        signature: BitString::from_bytes(&signature)?,
    };
    Ok(certificate.to_der()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::leaf::{ExtendedUsage, LeafSpec, issue_leaf};
    use rcgen::{BasicConstraints as RcgenBc, CertificateParams, DnType, IsCa, KeyUsagePurpose};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-25 12:00:00 UTC);

    /// A CA as kubeadm makes one: CN=kubernetes, keyUsage without cRLSign, ten years.
    fn kubeadm_like(usages: Vec<KeyUsagePurpose>, is_ca: bool) -> (String, String) {
        let (key, pkcs8) = SigningKeyPair::generate(KeyAlgorithm::P256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "kubernetes");
        params.is_ca = if is_ca { IsCa::Ca(RcgenBc::Unconstrained) } else { IsCa::ExplicitNoCa };
        params.key_usages = usages;
        params.not_before = datetime!(2025-01-01 00:00:00 UTC);
        params.not_after = datetime!(2035-01-01 00:00:00 UTC);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), super::super::to_pem("PRIVATE KEY", &pkcs8))
    }

    fn kubeadm_usages() -> Vec<KeyUsagePurpose> {
        vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyCertSign,
        ]
    }

    #[test]
    fn a_ca_without_crl_sign_is_recertified_under_the_same_name_and_key_id() {
        let (cert_pem, key_pem) = kubeadm_like(kubeadm_usages(), true);
        let imported = import_authority(&cert_pem, &key_pem, NOW).unwrap();
        assert!(imported.recertified);
        let original = Certificate::from_der(pem::parse(&cert_pem).unwrap().contents()).unwrap();
        let served = Certificate::from_der(&imported.certificate_der).unwrap();
        let (o, s) = (&original.tbs_certificate, &served.tbs_certificate);
        assert_eq!(s.subject.to_der().unwrap(), o.subject.to_der().unwrap());
        assert_eq!(s.issuer.to_der().unwrap(), o.issuer.to_der().unwrap());
        assert_eq!(s.validity, o.validity);
        assert_eq!(s.subject_public_key_info, o.subject_public_key_info);
        let ski = |t: &TbsCertificate| t.get::<SubjectKeyIdentifier>().unwrap().unwrap().1;
        assert_eq!(ski(s), ski(o));
        let (critical, ku) = s.get::<KeyUsage>().unwrap().unwrap();
        assert!(critical && ku.0.contains(KeyUsages::CRLSign) && ku.0.contains(KeyUsages::KeyCertSign));
        assert_ne!(s.serial_number, o.serial_number);

        // What the imported CA signs names the original's subject and key identifier.
        let (leaf_key, _) = SigningKeyPair::generate(KeyAlgorithm::P256).unwrap();
        let leaf = issue_leaf(
            &imported.signer,
            &LeafSpec {
                serial: &Serial::random().unwrap(),
                common_name: "system:kube-scheduler",
                organizations: &[],
                spki_der: &leaf_key.spki_der(),
                not_before: NOW,
                not_after: NOW + time::Duration::hours(1),
                extended_usages: &[ExtendedUsage::ClientAuth],
                key_encipherment: false,
                dns_names: &[],
                ip_addresses: &[],
            },
        )
        .unwrap();
        let leaf = Certificate::from_der(&leaf.der).unwrap();
        assert_eq!(leaf.tbs_certificate.issuer.to_der().unwrap(), o.subject.to_der().unwrap());
    }

    #[test]
    fn a_ca_with_crl_sign_and_ski_is_served_as_it_is() {
        let mut usages = kubeadm_usages();
        usages.push(KeyUsagePurpose::CrlSign);
        let (cert_pem, key_pem) = kubeadm_like(usages, true);
        let imported = import_authority(&cert_pem, &key_pem, NOW).unwrap();
        assert!(!imported.recertified);
        assert_eq!(imported.certificate_der, pem::parse(&cert_pem).unwrap().contents());
    }

    #[test]
    fn bad_imports_name_their_field_and_never_quote_the_key() {
        let (cert_pem, key_pem) = kubeadm_like(kubeadm_usages(), true);
        let (_, other_key) = kubeadm_like(kubeadm_usages(), true);
        let (leaf_pem, leaf_key) = kubeadm_like(vec![KeyUsagePurpose::DigitalSignature], false);
        let (no_cert_sign, no_cert_sign_key) = kubeadm_like(vec![KeyUsagePurpose::DigitalSignature], true);
        let field = |cert: &str, key: &str, now: OffsetDateTime| match import_authority(cert, key, now) {
            Err(PkiError::ImportRefused { field, detail }) => {
                assert!(!detail.contains("PRIVATE"), "{detail}");
                format!("{field}: {detail}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(
            field(&cert_pem, &other_key, NOW).starts_with("private_key_pem: the private key does not belong")
        );
        assert!(field(&leaf_pem, &leaf_key, NOW).starts_with("certificate_pem: not a CA"));
        assert!(field(&no_cert_sign, &no_cert_sign_key, NOW).contains("keyCertSign"));
        assert!(field(&cert_pem, &key_pem, datetime!(2036-01-01 00:00:00 UTC)).contains("expired"));
        assert!(field(&cert_pem, &key_pem, datetime!(2024-01-01 00:00:00 UTC)).contains("not valid yet"));
        assert!(field(&format!("{cert_pem}{cert_pem}"), &key_pem, NOW).contains("exactly one"));
        assert!(field(&cert_pem, "garbage", NOW).starts_with("private_key_pem"));
        // A subject kca cannot rebuild for its CRLs (an IA5String CN) is refused too.
        let (key, pkcs8) = SigningKeyPair::generate(KeyAlgorithm::P256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(
            DnType::CommonName,
            rcgen::DnValue::Ia5String(rcgen::string::Ia5String::try_from("odd").unwrap()),
        );
        params.is_ca = IsCa::Ca(RcgenBc::Unconstrained);
        params.key_usages = kubeadm_usages();
        params.not_before = datetime!(2025-01-01 00:00:00 UTC);
        params.not_after = datetime!(2035-01-01 00:00:00 UTC);
        let odd = params.self_signed(&key).unwrap().pem();
        let odd_key = super::super::to_pem("PRIVATE KEY", &pkcs8);
        assert!(field(&odd, &odd_key, NOW).starts_with("certificate_pem: kca cannot sign"));
    }
}
