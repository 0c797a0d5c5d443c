//! End-entity certificates, built with the RustCrypto x509-cert types and signed by the CA key.
//!
//! rcgen keeps one value per attribute type in a subject (rcgen#81), and a user certificate needs
//! one O per group, so leaves are assembled here: TBSCertificate → DER → signature over it.

use std::net::IpAddr;

use der::asn1::{BitString, Ia5String, ObjectIdentifier, OctetString, SetOfVec, Utf8StringRef};
use der::{Any, Decode, Encode};
use spki::SubjectPublicKeyInfoOwned;
use time::OffsetDateTime;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
    SubjectKeyIdentifier,
};
use x509_cert::ext::{AsExtension, Extension};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;

use super::{CaSigner, PkiError, Serial, der_time, fingerprint_sha256, key_identifier};

const OID_CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const OID_O: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");

/// Extended key usages kca puts in leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtendedUsage {
    ServerAuth,
    ClientAuth,
}

impl ExtendedUsage {
    fn oid(self) -> ObjectIdentifier {
        match self {
            ExtendedUsage::ServerAuth => ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1"),
            ExtendedUsage::ClientAuth => ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2"),
        }
    }
}

/// Everything that varies between leaves; the rest (CA:FALSE, SKI, AKI) is fixed.
#[derive(Debug, Clone)]
pub struct LeafSpec<'a> {
    pub serial: &'a Serial,
    pub common_name: &'a str,
    /// One O attribute per entry, in this order.
    pub organizations: &'a [String],
    /// The subject's public key, as a DER SubjectPublicKeyInfo.
    pub spki_der: &'a [u8],
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub extended_usages: &'a [ExtendedUsage],
    /// Add keyEncipherment beside digitalSignature (RSA server keys under TLS 1.2 key exchange).
    pub key_encipherment: bool,
    pub dns_names: &'a [String],
    pub ip_addresses: &'a [IpAddr],
}

/// A signed leaf.
#[derive(Debug, Clone)]
pub struct IssuedLeaf {
    pub der: Vec<u8>,
    pub pem: String,
    pub fingerprint: String,
}

/// The subject: one RDN per attribute, O entries first and CN last, as kubeadm writes them.
pub fn subject_name(common_name: &str, organizations: &[String]) -> Result<Name, PkiError> {
    let mut rdns = Vec::with_capacity(organizations.len() + 1);
    for org in organizations {
        rdns.push(single_rdn(OID_O, org)?);
    }
    rdns.push(single_rdn(OID_CN, common_name)?);
    Ok(RdnSequence(rdns))
}

fn single_rdn(oid: ObjectIdentifier, value: &str) -> Result<RelativeDistinguishedName, PkiError> {
    let value = Any::from(Utf8StringRef::new(value)?);
    let atv = AttributeTypeAndValue { oid, value };
    Ok(RelativeDistinguishedName(SetOfVec::try_from(vec![atv])?))
}

/// Sign a leaf with `ca`: CA:FALSE (critical), KU digitalSignature (critical), the EKUs asked
/// for, SKI, AKI = the CA's SKI, and a SAN extension when names or addresses are given.
pub fn issue_leaf(ca: &CaSigner, spec: &LeafSpec<'_>) -> Result<IssuedLeaf, PkiError> {
    let subject = subject_name(spec.common_name, spec.organizations)?;
    let spki = SubjectPublicKeyInfoOwned::from_der(spec.spki_der)
        .map_err(|e| PkiError::InvalidCsr(format!("unreadable public key: {e}")))?;
    let signature_algorithm = ca.key().algorithm().signature_algorithm();

    let mut usages = KeyUsages::DigitalSignature.into();
    if spec.key_encipherment {
        usages |= KeyUsages::KeyEncipherment;
    }
    let mut extensions: Vec<Extension> = vec![
        BasicConstraints { ca: false, path_len_constraint: None }.to_extension(&subject, &[])?,
        KeyUsage(usages).to_extension(&subject, &[])?,
    ];
    if !spec.extended_usages.is_empty() {
        let ekus = spec.extended_usages.iter().map(|u| u.oid()).collect();
        extensions.push(ExtendedKeyUsage(ekus).to_extension(&subject, &[])?);
    }
    extensions.push(
        SubjectKeyIdentifier(OctetString::new(key_identifier(spec.spki_der)?)?)
            .to_extension(&subject, &[])?,
    );
    extensions.push(
        AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(ca.key_id())?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        }
        .to_extension(&subject, &[])?,
    );
    if !spec.dns_names.is_empty() || !spec.ip_addresses.is_empty() {
        let mut names = Vec::with_capacity(spec.dns_names.len() + spec.ip_addresses.len());
        for dns in spec.dns_names {
            names.push(GeneralName::DnsName(Ia5String::new(dns)?));
        }
        for ip in spec.ip_addresses {
            names.push(GeneralName::from(*ip));
        }
        extensions.push(SubjectAltName(names).to_extension(&subject, &[])?);
    }

    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(spec.serial.as_bytes())?,
        signature: signature_algorithm.clone(),
        issuer: ca.subject().clone(),
        validity: Validity {
            not_before: der_time::to_x509_time(spec.not_before)?,
            not_after: der_time::to_x509_time(spec.not_after)?,
        },
        subject,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let tbs_der = tbs.to_der()?;
    let signature = ca.key().sign_bytes(&tbs_der)?;
    let certificate = Certificate {
        tbs_certificate: tbs,
        signature_algorithm,
        signature: BitString::from_bytes(&signature)?,
    };
    let der = certificate.to_der()?;
    Ok(IssuedLeaf { pem: super::to_pem("CERTIFICATE", &der), fingerprint: fingerprint_sha256(&der), der })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::ca::{AuthorityIdentity, create_authority};
    use crate::pki::{AuthorityKind, KeyAlgorithm, SigningKeyPair};
    use time::macros::datetime;

    #[test]
    fn a_user_leaf_has_every_group_as_its_own_o_in_order() {
        let now = datetime!(2026-11-25 12:00:00 UTC);
        let identity = AuthorityIdentity {
            cluster_name: "c",
            cluster_id: "id",
            kind: AuthorityKind::Operators,
            generation: 1,
        };
        let ca = create_authority(&identity, KeyAlgorithm::P256, now).unwrap();
        let (key, _) = SigningKeyPair::generate(KeyAlgorithm::Ed25519).unwrap();
        let serial = Serial::random().unwrap();
        let groups = vec!["dev".to_string(), "ops".to_string(), "system:basic-user".to_string()];
        let leaf = issue_leaf(
            &ca.signer,
            &LeafSpec {
                serial: &serial,
                common_name: "alice",
                organizations: &groups,
                spki_der: &key.spki_der(),
                not_before: now,
                not_after: now + time::Duration::hours(1),
                extended_usages: &[ExtendedUsage::ClientAuth],
                key_encipherment: false,
                dns_names: &[],
                ip_addresses: &[],
            },
        )
        .unwrap();
        let cert = Certificate::from_der(&leaf.der).unwrap();
        assert_eq!(cert.tbs_certificate.subject.to_string(), "CN=alice,O=system:basic-user,O=ops,O=dev");
        assert_eq!(cert.tbs_certificate.issuer, *ca.signer.subject());
        assert_eq!(cert.tbs_certificate.serial_number.as_bytes(), serial.as_bytes());
    }
}
