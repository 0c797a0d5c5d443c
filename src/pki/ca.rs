//! Certificate authorities: making a CA certificate, and the loaded form that signs.

use der::{Decode, Encode};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, KeyIdMethod,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::name::Name;
use zeroize::Zeroizing;

use super::keys::{CaKey, RcgenKey, spki_der};
use super::{AuthorityKind, KeyAlgorithm, PkiError, Serial, SigningKeyPair, der_time, fingerprint_sha256};

/// Clients and servers tolerate this much clock skew: certificates and CRLs start this far back.
pub const BACKDATE: Duration = Duration::minutes(5);

/// A CA certificate lasts ten years.
pub const AUTHORITY_VALIDITY: Duration = Duration::days(3652);

/// What makes an authority's subject unique: its cluster, kind and generation.
#[derive(Debug, Clone)]
pub struct AuthorityIdentity<'a> {
    pub cluster_name: &'a str,
    pub cluster_id: &'a str,
    pub kind: AuthorityKind,
    pub generation: i32,
}

impl AuthorityIdentity<'_> {
    /// `CN=<kind> CA <generation>, OU=<cluster name>, O=kca, serialNumber=<cluster id>`: unique per
    /// cluster, kind and generation (a rotated CA never shares its DN with its predecessor), and
    /// within the X.520 length bounds whatever the cluster name.
    pub(crate) fn distinguished_name(&self) -> Result<DistinguishedName, PkiError> {
        let cluster_id = rcgen::string::PrintableString::try_from(self.cluster_id)
            .map_err(|_| PkiError::Encoding("the cluster id is not a printable string".into()))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CustomDnType(vec![2, 5, 4, 5]), DnValue::PrintableString(cluster_id));
        dn.push(DnType::OrganizationName, "kca");
        dn.push(DnType::OrganizationalUnitName, self.cluster_name);
        dn.push(DnType::CommonName, format!("{} CA {}", self.kind, self.generation));
        Ok(dn)
    }
}

/// A freshly made authority: its certificate, its key (PKCS#8, to be sealed) and its signer.
pub struct NewAuthority {
    pub certificate_der: Vec<u8>,
    pub pkcs8: Zeroizing<Vec<u8>>,
    pub signer: CaSigner,
}

/// Make a self-signed CA with a new in-memory key: CA:TRUE (critical), KU keyCertSign + cRLSign +
/// digitalSignature (critical), SKI, a random serial, valid from `now - BACKDATE` for ten years.
pub fn create_authority(
    identity: &AuthorityIdentity<'_>,
    algorithm: KeyAlgorithm,
    now: OffsetDateTime,
) -> Result<NewAuthority, PkiError> {
    let (key, pkcs8) = SigningKeyPair::generate(algorithm)?;
    let signer = create_authority_with_key(identity, Box::new(key), now)?;
    Ok(NewAuthority { certificate_der: signer.certificate_der.clone(), pkcs8, signer })
}

/// Make a self-signed CA, as [`create_authority`] does, over a key made elsewhere (in a token).
pub fn create_authority_with_key(
    identity: &AuthorityIdentity<'_>,
    key: Box<dyn CaKey>,
    now: OffsetDateTime,
) -> Result<CaSigner, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = identity.distinguished_name()?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.key_identifier_method = KeyIdMethod::PreSpecified(super::key_identifier(&spki_der(key.as_ref()))?);
    params.serial_number = Some(rcgen::SerialNumber::from_slice(Serial::random()?.as_bytes()));
    // X.509 times have whole seconds; keep the stored times equal to the encoded ones.
    let not_before = (now - BACKDATE).replace_nanosecond(0).expect("0 is a valid nanosecond");
    params.not_before = not_before;
    params.not_after = not_before + AUTHORITY_VALIDITY;
    let signing = RcgenKey::new(key.as_ref());
    let certificate = params.self_signed(&signing).map_err(|e| signing.error(e))?;
    let certificate_der = certificate.der().to_vec();
    drop(signing);
    CaSigner::with_key(&certificate_der, key)
}

/// The subjectPublicKey of a certificate (for a CA whose key signs elsewhere).
pub fn certificate_public_key(certificate_der: &[u8]) -> Result<Vec<u8>, PkiError> {
    let certificate =
        Certificate::from_der(certificate_der).map_err(|e| PkiError::InvalidCertificate(e.to_string()))?;
    Ok(certificate.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes().to_vec())
}

/// A CA loaded into memory, ready to sign leaves and CRLs.
pub struct CaSigner {
    certificate_der: Vec<u8>,
    subject: Name,
    /// The subject as rcgen writes it (rebuilt at load, which refuses names rcgen cannot write).
    /// CRLs are no longer signed through rcgen; the tests compare them with what rcgen writes.
    #[cfg_attr(not(test), allow(dead_code))]
    distinguished_name: DistinguishedName,
    key_id: Vec<u8>,
    key: Box<dyn CaKey>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for CaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaSigner").field("subject", &self.subject.to_string()).finish_non_exhaustive()
    }
}

impl CaSigner {
    /// Load a CA from its certificate and its unsealed PKCS#8 key, checking they belong together.
    pub fn load(certificate_der: &[u8], algorithm: KeyAlgorithm, pkcs8: &[u8]) -> Result<Self, PkiError> {
        let key = SigningKeyPair::from_pkcs8(algorithm, pkcs8)?;
        Self::with_key(certificate_der, Box::new(key))
    }

    /// Load a CA from its certificate and a key kept elsewhere, checking they belong together.
    pub fn with_key(certificate_der: &[u8], key: Box<dyn CaKey>) -> Result<Self, PkiError> {
        let certificate = Certificate::from_der(certificate_der)
            .map_err(|e| PkiError::InvalidCertificate(e.to_string()))?;
        let tbs = &certificate.tbs_certificate;
        if tbs.subject_public_key_info.to_der()? != spki_der(key.as_ref()) {
            return Err(PkiError::InvalidKey("the key does not match the CA certificate"));
        }
        let key_id = match tbs.get::<SubjectKeyIdentifier>()? {
            Some((_, ski)) => ski.0.as_bytes().to_vec(),
            None => return Err(PkiError::InvalidCertificate("the CA certificate has no SKI".into())),
        };
        Ok(Self {
            certificate_der: certificate_der.to_vec(),
            distinguished_name: rcgen_name(&tbs.subject)?,
            subject: tbs.subject.clone(),
            key_id,
            not_before: der_time::from_x509_time(&tbs.validity.not_before),
            not_after: der_time::from_x509_time(&tbs.validity.not_after),
            key,
        })
    }

    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    pub fn certificate_pem(&self) -> String {
        super::to_pem("CERTIFICATE", &self.certificate_der)
    }

    pub fn fingerprint(&self) -> String {
        fingerprint_sha256(&self.certificate_der)
    }

    /// The subject DN, RFC 4514 style.
    pub fn subject_text(&self) -> String {
        self.subject.to_string()
    }

    pub fn subject(&self) -> &Name {
        &self.subject
    }

    /// The Subject Key Identifier, which becomes the AKI of what this CA signs.
    pub fn key_id(&self) -> &[u8] {
        &self.key_id
    }

    pub fn key(&self) -> &dyn CaKey {
        self.key.as_ref()
    }

    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The rcgen issuer for CRLs: same DN, same key identifier as the certificate, signing with
    /// `key` (this CA's key as rcgen wants it, from [`Self::key`]).
    #[cfg(test)]
    pub(crate) fn rcgen_issuer<'k>(&self, key: &'k RcgenKey<'k>) -> rcgen::Issuer<'static, &'k RcgenKey<'k>> {
        let mut params = CertificateParams::default();
        params.distinguished_name = self.distinguished_name.clone();
        params.key_identifier_method = KeyIdMethod::PreSpecified(self.key_id.clone());
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        rcgen::Issuer::new(params, key)
    }
}

/// Rebuild an rcgen name from a parsed one, attribute for attribute and string type for string
/// type, so that the issuer of a CRL matches the CA subject byte for byte.
fn rcgen_name(name: &Name) -> Result<DistinguishedName, PkiError> {
    use der::Tag;
    use der::asn1::{PrintableStringRef, Utf8StringRef};
    let mut dn = DistinguishedName::new();
    for rdn in name.0.iter() {
        for atv in rdn.0.iter() {
            let oid = atv.oid.to_string();
            let arcs: Vec<u64> = oid.split('.').filter_map(|arc| arc.parse().ok()).collect();
            let dn_type = match oid.as_str() {
                "2.5.4.3" => DnType::CommonName,
                "2.5.4.10" => DnType::OrganizationName,
                "2.5.4.11" => DnType::OrganizationalUnitName,
                _ => DnType::CustomDnType(arcs),
            };
            let value = match der::Tagged::tag(&atv.value) {
                Tag::Utf8String => {
                    DnValue::Utf8String(Utf8StringRef::try_from(&atv.value)?.as_str().to_owned())
                }
                Tag::PrintableString => DnValue::PrintableString(
                    rcgen::string::PrintableString::try_from(
                        PrintableStringRef::try_from(&atv.value)?.as_str(),
                    )
                    .map_err(|e| PkiError::Encoding(e.to_string()))?,
                ),
                tag => {
                    return Err(PkiError::InvalidCertificate(format!(
                        "unsupported string type {tag} in CA subject"
                    )));
                }
            };
            dn.push(dn_type, value);
        }
    }
    Ok(dn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};

    pub(crate) fn identity(kind: AuthorityKind) -> AuthorityIdentity<'static> {
        AuthorityIdentity {
            cluster_name: "prod",
            cluster_id: "5f0c1d2e-0000-4000-8000-000000000001",
            kind,
            generation: 1,
        }
    }

    #[test]
    fn a_ca_is_a_critical_ca_with_ski_and_the_right_key_usage() {
        for alg in [KeyAlgorithm::P256, KeyAlgorithm::P384, KeyAlgorithm::Ed25519] {
            let now = datetime!(2026-11-25 12:00:00 UTC);
            let ca = create_authority(&identity(AuthorityKind::Operators), alg, now).unwrap();
            let cert = Certificate::from_der(&ca.certificate_der).unwrap();
            let tbs = &cert.tbs_certificate;
            let (critical, bc) = tbs.get::<BasicConstraints>().unwrap().unwrap();
            assert!(critical && bc.ca);
            let (critical, ku) = tbs.get::<KeyUsage>().unwrap().unwrap();
            assert!(critical);
            assert!(ku.0.contains(KeyUsages::KeyCertSign) && ku.0.contains(KeyUsages::CRLSign));
            assert_eq!(ca.signer.key_id().len(), 20);
            assert_eq!(ca.signer.not_before(), now - BACKDATE);
            assert_eq!(ca.signer.not_after(), now - BACKDATE + AUTHORITY_VALIDITY);
            assert_eq!(
                ca.signer.subject_text(),
                "CN=operators CA 1,OU=prod,O=kca,SERIALNUMBER=5f0c1d2e-0000-4000-8000-000000000001"
            );
        }
    }

    #[test]
    fn loading_checks_the_key_belongs_to_the_certificate() {
        let now = datetime!(2026-11-25 12:00:00 UTC);
        let ca = create_authority(&identity(AuthorityKind::Etcd), KeyAlgorithm::P256, now).unwrap();
        let loaded = CaSigner::load(&ca.certificate_der, KeyAlgorithm::P256, &ca.pkcs8).unwrap();
        assert_eq!(loaded.key_id(), ca.signer.key_id());
        let other = create_authority(&identity(AuthorityKind::Etcd), KeyAlgorithm::P256, now).unwrap();
        assert!(CaSigner::load(&ca.certificate_der, KeyAlgorithm::P256, &other.pkcs8).is_err());
    }

    #[test]
    fn the_rebuilt_issuer_name_encodes_like_the_subject() {
        let now = datetime!(2026-11-25 12:00:00 UTC);
        let ca = create_authority(&identity(AuthorityKind::Kubelet), KeyAlgorithm::P256, now).unwrap();
        let rebuilt = ca.signer.distinguished_name.clone();
        let mut params = CertificateParams::default();
        params.distinguished_name = rebuilt;
        let again = params.self_signed(&RcgenKey::new(ca.signer.key())).unwrap();
        let again = Certificate::from_der(again.der()).unwrap();
        assert_eq!(again.tbs_certificate.subject.to_der().unwrap(), ca.signer.subject().to_der().unwrap());
    }
}
