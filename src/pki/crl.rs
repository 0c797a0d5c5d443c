//! Certificate revocation lists, signed by one CA generation with rcgen.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{CaSigner, PkiError, Serial};

/// RFC 5280 §5.3.1 reason codes kca records. `certificateHold` and `removeFromCRL` are left out:
/// a revocation in kca is final.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum RevocationReason {
    #[default]
    #[serde(rename = "unspecified")]
    Unspecified,
    #[serde(rename = "keyCompromise")]
    KeyCompromise,
    #[serde(rename = "cACompromise", alias = "caCompromise")]
    CaCompromise,
    #[serde(rename = "affiliationChanged")]
    AffiliationChanged,
    #[serde(rename = "superseded")]
    Superseded,
    #[serde(rename = "cessationOfOperation")]
    CessationOfOperation,
    #[serde(rename = "privilegeWithdrawn")]
    PrivilegeWithdrawn,
    #[serde(rename = "aACompromise", alias = "aaCompromise")]
    AaCompromise,
}

impl RevocationReason {
    const ALL: [RevocationReason; 8] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise,
    ];

    /// The RFC 5280 name, also what the HAProxy map file carries.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::CaCompromise => "cACompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
            RevocationReason::AaCompromise => "aACompromise",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }

    fn rcgen(self) -> rcgen::RevocationReason {
        match self {
            RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
            RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            RevocationReason::CaCompromise => rcgen::RevocationReason::CaCompromise,
            RevocationReason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
            RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            RevocationReason::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
            RevocationReason::AaCompromise => rcgen::RevocationReason::AaCompromise,
        }
    }
}

/// One revoked certificate as it goes into a CRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedEntry {
    pub serial: Serial,
    pub revoked_at: OffsetDateTime,
    pub reason: RevocationReason,
}

/// The lowest CRL Number a CRL signed at `at` may carry: its time in microseconds since the Unix
/// epoch. Like Let's Encrypt's Boulder (which takes thisUpdate in nanoseconds), numbers follow
/// the clock, so a server restored from a backup still publishes numbers above those the old
/// server published after the backup was taken; the store raises the floor by one whenever its
/// counter is already there, so numbers strictly increase even within a microsecond.
pub fn crl_number_floor(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

/// What a CRL covers and for how long.
#[derive(Clone, Copy, Debug)]
pub struct CrlWindow {
    pub number: u64,
    pub this_update: OffsetDateTime,
    pub next_update: OffsetDateTime,
}

/// Sign a v2 CRL with the CA's key: AKI = the CA's SKI, the CRL Number, and one entry per revoked
/// certificate. The `unspecified` reason is left out of the entry, as RFC 5280 §5.3.1 asks.
pub fn sign_crl(ca: &CaSigner, window: CrlWindow, revoked: &[RevokedEntry]) -> Result<Vec<u8>, PkiError> {
    let params = rcgen::CertificateRevocationListParams {
        this_update: window.this_update,
        next_update: window.next_update,
        crl_number: rcgen::SerialNumber::from(window.number),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|entry| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(entry.serial.as_bytes()),
                revocation_time: entry.revoked_at,
                reason_code: match entry.reason {
                    RevocationReason::Unspecified => None,
                    other => Some(other.rcgen()),
                },
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::PreSpecified(ca.key_id().to_vec()),
    };
    let crl = params.signed_by(&ca.rcgen_issuer())?;
    Ok(crl.der().to_vec())
}

/// The entries of a DER CRL as `<SERIAL HEX> <reason>` lines (the HAProxy map format).
pub fn read_entries(der: &[u8]) -> Result<Vec<String>, PkiError> {
    use der::Decode;
    let crl = x509_cert::crl::CertificateList::from_der(der)?;
    let reason_oid = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.21");
    let mut lines = Vec::new();
    for entry in crl.tbs_cert_list.revoked_certificates.iter().flatten() {
        let reason = entry
            .crl_entry_extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id == reason_oid)
            .and_then(|e| x509_cert::ext::pkix::CrlReason::from_der(e.extn_value.as_bytes()).ok())
            .map_or(RevocationReason::Unspecified, from_crl_reason);
        lines.push(format!("{} {}", hex::encode_upper(entry.serial_number.as_bytes()), reason.as_str()));
    }
    Ok(lines)
}

fn from_crl_reason(reason: x509_cert::ext::pkix::CrlReason) -> RevocationReason {
    use x509_cert::ext::pkix::CrlReason as R;
    match reason {
        R::KeyCompromise => RevocationReason::KeyCompromise,
        R::CaCompromise => RevocationReason::CaCompromise,
        R::AffiliationChanged => RevocationReason::AffiliationChanged,
        R::Superseded => RevocationReason::Superseded,
        R::CessationOfOperation => RevocationReason::CessationOfOperation,
        R::PrivilegeWithdrawn => RevocationReason::PrivilegeWithdrawn,
        R::AaCompromise => RevocationReason::AaCompromise,
        _ => RevocationReason::Unspecified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crl_number_floors_follow_the_clock_in_microseconds() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(crl_number_floor(at), 1_700_000_000_000_000);
        assert!(crl_number_floor(at + time::Duration::microseconds(1)) > crl_number_floor(at));
    }
    use crate::pki::ca::{AuthorityIdentity, create_authority};
    use crate::pki::{AuthorityKind, KeyAlgorithm};
    use der::Decode;
    use time::macros::datetime;
    use x509_cert::crl::CertificateList;
    use x509_cert::ext::pkix::AuthorityKeyIdentifier;

    #[test]
    fn a_crl_names_its_issuer_and_key_and_lists_the_entries() {
        let now = datetime!(2026-11-25 12:00:00 UTC);
        let identity = AuthorityIdentity {
            cluster_name: "c",
            cluster_id: "id",
            kind: AuthorityKind::Operators,
            generation: 1,
        };
        let ca = create_authority(&identity, KeyAlgorithm::P256, now).unwrap();
        let entries = vec![
            RevokedEntry {
                serial: Serial::random().unwrap(),
                revoked_at: now,
                reason: RevocationReason::KeyCompromise,
            },
            RevokedEntry {
                serial: Serial::random().unwrap(),
                revoked_at: now,
                reason: RevocationReason::Unspecified,
            },
        ];
        let window = CrlWindow { number: 7, this_update: now, next_update: now + time::Duration::days(7) };
        let der = sign_crl(&ca.signer, window, &entries).unwrap();
        let crl = CertificateList::from_der(&der).unwrap();
        assert_eq!(crl.tbs_cert_list.issuer, *ca.signer.subject());
        assert_eq!(crl.tbs_cert_list.revoked_certificates.as_ref().unwrap().len(), 2);
        let aki = crl
            .tbs_cert_list
            .crl_extensions
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.extn_id == der::asn1::ObjectIdentifier::new_unwrap("2.5.29.35"))
            .unwrap();
        let aki = AuthorityKeyIdentifier::from_der(aki.extn_value.as_bytes()).unwrap();
        assert_eq!(aki.key_identifier.unwrap().as_bytes(), ca.signer.key_id());
        let lines = read_entries(&der).unwrap();
        assert_eq!(lines[0], format!("{} keyCompromise", entries[0].serial));
        assert_eq!(lines[1], format!("{} unspecified", entries[1].serial));
    }

    #[test]
    fn reasons_round_trip_by_name() {
        for reason in RevocationReason::ALL {
            assert_eq!(RevocationReason::parse(reason.as_str()), Some(reason));
        }
    }
}
