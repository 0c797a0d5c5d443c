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

    #[cfg(test)]
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
///
/// The DER is what rcgen 0.14 writes for the same CRL (a test compares them byte for byte), but
/// written here into buffers of known size: a CRL re-published at every revocation lists every
/// revoked certificate, and at 100,000 entries rcgen's nested writers spent most of their time
/// growing and copying buffers.
pub fn sign_crl(ca: &CaSigner, window: CrlWindow, revoked: &[RevokedEntry]) -> Result<Vec<u8>, PkiError> {
    use der::Encode;
    if window.next_update <= window.this_update {
        return Err(PkiError::Encoding("the CRL's nextUpdate must be after its thisUpdate".into()));
    }
    let algorithm = ca.key().algorithm().signature_algorithm().to_der()?;
    let issuer = ca.subject().to_der()?;
    let extensions = crl_extensions(ca.key_id(), window.number);

    // TBSCertList: everything but the entries is small; the entries' length is computed first.
    let entries_len: usize = revoked.iter().map(entry_len).sum();
    let mut head = Vec::with_capacity(64 + algorithm.len() + issuer.len());
    head.extend_from_slice(&[der_tag::INTEGER, 1, 1]); // version v2
    head.extend_from_slice(&algorithm);
    head.extend_from_slice(&issuer);
    write_time(&mut head, window.this_update);
    write_time(&mut head, window.next_update);
    let list_len = if revoked.is_empty() { 0 } else { tlv_len(entries_len) };
    let tbs_content = head.len() + list_len + extensions.len();
    let mut tbs = Vec::with_capacity(tlv_len(tbs_content));
    write_header(&mut tbs, der_tag::SEQUENCE, tbs_content);
    tbs.extend_from_slice(&head);
    // RFC 5280 §5.1.2.6: without revoked certificates the list is absent, not empty.
    if !revoked.is_empty() {
        write_header(&mut tbs, der_tag::SEQUENCE, entries_len);
        for entry in revoked {
            write_entry(&mut tbs, entry);
        }
    }
    tbs.extend_from_slice(&extensions);
    debug_assert_eq!(tbs.len(), tlv_len(tbs_content));

    let signature = ca.key().sign_bytes(&tbs)?;
    let bits_len = signature.len() + 1;
    let content = tbs.len() + algorithm.len() + tlv_len(bits_len);
    let mut out = Vec::with_capacity(tlv_len(content));
    write_header(&mut out, der_tag::SEQUENCE, content);
    out.extend_from_slice(&tbs);
    drop(tbs);
    out.extend_from_slice(&algorithm);
    write_header(&mut out, der_tag::BIT_STRING, bits_len);
    out.push(0); // no unused bits
    out.extend_from_slice(&signature);
    debug_assert_eq!(out.len(), tlv_len(content));
    Ok(out)
}

mod der_tag {
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OCTET_STRING: u8 = 0x04;
    pub const ENUMERATED: u8 = 0x0a;
    pub const UTC_TIME: u8 = 0x17;
    pub const GENERALIZED_TIME: u8 = 0x18;
    pub const SEQUENCE: u8 = 0x30;
    pub const CONTEXT_0_CONSTRUCTED: u8 = 0xa0;
    pub const CONTEXT_0: u8 = 0x80;
}

/// The length of a DER length field for `len` content octets.
fn length_len(len: usize) -> usize {
    match len {
        0..0x80 => 1,
        0x80..0x100 => 2,
        0x100..0x1_0000 => 3,
        0x1_0000..0x100_0000 => 4,
        _ => 5,
    }
}

/// The length of a whole TLV with `len` content octets (one-octet tags only).
fn tlv_len(len: usize) -> usize {
    1 + length_len(len) + len
}

fn write_header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    let n = length_len(len);
    if n == 1 {
        out.push(len as u8);
    } else {
        out.push(0x80 | (n - 1) as u8);
        out.extend_from_slice(&(len as u64).to_be_bytes()[8 - (n - 1)..]);
    }
}

/// An unsigned big-endian integer as DER INTEGER content, as rcgen (yasna's `write_bigint_bytes`
/// with `positive`) writes it: leading zero octets dropped, one added before a high bit, and zero
/// as a single octet.
fn unsigned_integer(bytes: &[u8]) -> (bool, &[u8]) {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    match bytes.first() {
        None => (true, bytes),
        Some(first) => (*first >= 0x80, bytes),
    }
}

fn integer_len(bytes: &[u8]) -> usize {
    let (pad, bytes) = unsigned_integer(bytes);
    tlv_len(usize::from(pad) + bytes.len())
}

fn write_integer(out: &mut Vec<u8>, bytes: &[u8]) {
    let (pad, bytes) = unsigned_integer(bytes);
    write_header(out, der_tag::INTEGER, usize::from(pad) + bytes.len());
    if pad {
        out.push(0);
    }
    out.extend_from_slice(bytes);
}

/// RFC 5280 §4.1.2.5 (which §5.1.2.4 refers to): UTCTime for 1950 to 2049, GeneralizedTime
/// otherwise, in whole seconds.
fn time_len(at: OffsetDateTime) -> usize {
    if (1950..2050).contains(&at.to_offset(time::UtcOffset::UTC).year()) { 15 } else { 17 }
}

fn write_time(out: &mut Vec<u8>, at: OffsetDateTime) {
    let at = at.to_offset(time::UtcOffset::UTC);
    let (year, month, day) = at.to_calendar_date();
    let (hour, minute, second) = at.to_hms();
    let utc = (1950..2050).contains(&year);
    if utc {
        out.extend_from_slice(&[der_tag::UTC_TIME, 13]);
    } else {
        out.extend_from_slice(&[der_tag::GENERALIZED_TIME, 15]);
        let century = year.rem_euclid(10_000) / 100;
        out.extend_from_slice(&two_digits(century as u8));
    }
    out.extend_from_slice(&two_digits(year.rem_euclid(100) as u8));
    out.extend_from_slice(&two_digits(month as u8));
    out.extend_from_slice(&two_digits(day));
    out.extend_from_slice(&two_digits(hour));
    out.extend_from_slice(&two_digits(minute));
    out.extend_from_slice(&two_digits(second));
    out.push(b'Z');
}

fn two_digits(n: u8) -> [u8; 2] {
    [b'0' + n / 10 % 10, b'0' + n % 10]
}

/// `id-ce-cRLReasons` (2.5.29.21).
const OID_CRL_REASON: [u8; 5] = [0x06, 0x03, 0x55, 0x1d, 0x15];
/// `id-ce-authorityKeyIdentifier` (2.5.29.35).
const OID_AKI: [u8; 5] = [0x06, 0x03, 0x55, 0x1d, 0x23];
/// `id-ce-cRLNumber` (2.5.29.20).
const OID_CRL_NUMBER: [u8; 5] = [0x06, 0x03, 0x55, 0x1d, 0x14];

/// The reasonCode extension of an entry: `SEQUENCE { SEQUENCE { OID, OCTET STRING { ENUMERATED } } }`.
const REASON_EXTENSIONS_LEN: usize = 14;

fn reason_code(reason: RevocationReason) -> Option<u8> {
    match reason {
        RevocationReason::Unspecified => None,
        RevocationReason::KeyCompromise => Some(1),
        RevocationReason::CaCompromise => Some(2),
        RevocationReason::AffiliationChanged => Some(3),
        RevocationReason::Superseded => Some(4),
        RevocationReason::CessationOfOperation => Some(5),
        RevocationReason::PrivilegeWithdrawn => Some(9),
        RevocationReason::AaCompromise => Some(10),
    }
}

fn entry_content_len(entry: &RevokedEntry) -> usize {
    integer_len(entry.serial.as_bytes())
        + time_len(entry.revoked_at)
        + if reason_code(entry.reason).is_some() { REASON_EXTENSIONS_LEN } else { 0 }
}

fn entry_len(entry: &RevokedEntry) -> usize {
    tlv_len(entry_content_len(entry))
}

fn write_entry(out: &mut Vec<u8>, entry: &RevokedEntry) {
    write_header(out, der_tag::SEQUENCE, entry_content_len(entry));
    write_integer(out, entry.serial.as_bytes());
    write_time(out, entry.revoked_at);
    if let Some(code) = reason_code(entry.reason) {
        out.extend_from_slice(&[der_tag::SEQUENCE, 12, der_tag::SEQUENCE, 10]);
        out.extend_from_slice(&OID_CRL_REASON);
        out.extend_from_slice(&[der_tag::OCTET_STRING, 3, der_tag::ENUMERATED, 1, code]);
    }
}

/// `[0] EXPLICIT SEQUENCE { authorityKeyIdentifier, cRLNumber }`, in rcgen's order.
fn crl_extensions(key_id: &[u8], number: u64) -> Vec<u8> {
    let mut aki_value = Vec::with_capacity(key_id.len() + 8);
    write_header(&mut aki_value, der_tag::SEQUENCE, tlv_len(key_id.len()));
    write_header(&mut aki_value, der_tag::CONTEXT_0, key_id.len());
    aki_value.extend_from_slice(key_id);
    let mut number_value = Vec::with_capacity(12);
    write_integer(&mut number_value, &number.to_be_bytes());
    let mut list = Vec::with_capacity(aki_value.len() + number_value.len() + 32);
    for (oid, value) in [(&OID_AKI, &aki_value), (&OID_CRL_NUMBER, &number_value)] {
        write_header(&mut list, der_tag::SEQUENCE, oid.len() + tlv_len(value.len()));
        list.extend_from_slice(oid);
        write_header(&mut list, der_tag::OCTET_STRING, value.len());
        list.extend_from_slice(value);
    }
    let mut out = Vec::with_capacity(list.len() + 12);
    write_header(&mut out, der_tag::CONTEXT_0_CONSTRUCTED, tlv_len(list.len()));
    write_header(&mut out, der_tag::SEQUENCE, list.len());
    out.extend_from_slice(&list);
    out
}

/// The same CRL through rcgen: what [`sign_crl`] must write, byte for byte.
#[cfg(test)]
fn sign_crl_rcgen(ca: &CaSigner, window: CrlWindow, revoked: &[RevokedEntry]) -> Result<Vec<u8>, PkiError> {
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
    let key = super::keys::RcgenKey::new(ca.key());
    let crl = params.signed_by(&ca.rcgen_issuer(&key)).map_err(|e| key.error(e))?;
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
    use der::Encode as _;
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

    /// The three parts of a DER CRL as raw TLVs: TBSCertList, signatureAlgorithm, signature (the
    /// BIT STRING's content after its unused-bits octet).
    fn parts_of(der: &[u8]) -> (&[u8], &[u8], &[u8]) {
        // (header length, content length) of the TLV at `at`.
        let tlv = |at: usize| -> (usize, usize) {
            match der[at + 1] {
                short @ 0..0x80 => (2, usize::from(short)),
                long => {
                    let n = usize::from(long & 0x7f);
                    (2 + n, der[at + 2..at + 2 + n].iter().fold(0, |len, b| len << 8 | usize::from(*b)))
                }
            }
        };
        let (outer_header, outer_len) = tlv(0);
        assert_eq!(outer_header + outer_len, der.len());
        let (tbs_header, tbs_len) = tlv(outer_header);
        let alg_at = outer_header + tbs_header + tbs_len;
        let (alg_header, alg_len) = tlv(alg_at);
        let sig_at = alg_at + alg_header + alg_len;
        let (sig_header, sig_len) = tlv(sig_at);
        assert_eq!(sig_at + sig_header + sig_len, der.len());
        assert_eq!(der[sig_at + sig_header], 0);
        (&der[outer_header..alg_at], &der[alg_at..sig_at], &der[sig_at + sig_header + 1..])
    }
    fn entries_for_equivalence(now: OffsetDateTime) -> Vec<RevokedEntry> {
        let mut entries = Vec::new();
        // Every reason, with serials of every shape: leading zero octets (dropped), a high bit (a
        // zero octet added), a single zero, 20 octets, nothing at all.
        let serials: [&[u8]; 9] = [
            &[0x40, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
            &[0x00, 0x00, 0x7f, 0x01],
            &[0x00, 0x80, 0x01],
            &[0x80],
            &[0xff; 20],
            &[0x00],
            &[],
            &[0x01],
            &[0x7f; 20],
        ];
        for (i, serial) in serials.iter().enumerate() {
            for (j, reason) in RevocationReason::ALL.into_iter().enumerate() {
                entries.push(RevokedEntry {
                    serial: Serial::from_bytes(serial),
                    // Sub-second parts are dropped; seconds, minutes and days vary.
                    revoked_at: now - time::Duration::seconds((i * 97 + j * 3601) as i64)
                        + time::Duration::nanoseconds(123_456_789),
                    reason,
                });
            }
        }
        // Revocation times in GeneralizedTime's range, before 1950 and from 2050 on.
        for year in [1949, 1950, 2049, 2050, 2100, 9999] {
            entries.push(RevokedEntry {
                serial: Serial::random().unwrap(),
                revoked_at: now.replace_year(year).unwrap(),
                reason: RevocationReason::Superseded,
            });
        }
        entries
    }

    fn random_entries(count: usize, now: OffsetDateTime) -> Vec<RevokedEntry> {
        (0..count)
            .map(|i| RevokedEntry {
                serial: Serial::random().unwrap(),
                revoked_at: now - time::Duration::seconds(i as i64),
                reason: RevocationReason::ALL[i % RevocationReason::ALL.len()],
            })
            .collect()
    }

    #[test]
    fn the_crl_is_what_rcgen_writes_byte_for_byte() {
        let now = datetime!(2026-11-25 12:34:56 UTC);
        for algorithm in [KeyAlgorithm::Ed25519, KeyAlgorithm::P256, KeyAlgorithm::P384] {
            let identity = AuthorityIdentity {
                cluster_name: "equivalence",
                cluster_id: "id",
                kind: AuthorityKind::Operators,
                generation: 3,
            };
            let ca = create_authority(&identity, algorithm, now).unwrap();
            let lists = [
                Vec::new(),
                entries_for_equivalence(now),
                // Lengths in one, two and three octets, for entries, the list and the CRL.
                random_entries(2, now),
                random_entries(5, now),
                random_entries(3_000, now),
                random_entries(400_000 / 49, now),
            ];
            let windows = [
                (0, now, now + time::Duration::days(7)),
                (1, now, now + time::Duration::hours(1)),
                (0x7f, now, now + time::Duration::days(7)),
                (0x80, now, now + time::Duration::days(7)),
                (crl_number_floor(now) as u64, now, now + time::Duration::days(7)),
                (u64::MAX, now, datetime!(2050-01-01 00:00:00 UTC)),
                (42, datetime!(1949-12-31 23:59:59 UTC), datetime!(2049-12-31 23:59:59 UTC)),
            ];
            for revoked in &lists {
                for (number, this_update, next_update) in windows {
                    let window = CrlWindow { number, this_update, next_update };
                    let ours = sign_crl(&ca.signer, window, revoked).unwrap();
                    let rcgen = sign_crl_rcgen(&ca.signer, window, revoked).unwrap();
                    let what = format!("{algorithm:?}, {} entries, number {number}", revoked.len());
                    if algorithm == KeyAlgorithm::Ed25519 {
                        // Deterministic signatures: the whole CRL is the same.
                        assert!(ours == rcgen, "{what}");
                    }
                    let (tbs, ours_algorithm, signature) = parts_of(&ours);
                    let (rcgen_tbs, rcgen_algorithm, _) = parts_of(&rcgen);
                    assert!(tbs == rcgen_tbs, "{what}");
                    assert!(ours_algorithm == rcgen_algorithm, "{what}");
                    // The signature verifies over the TBSCertList as written.
                    let verifier: &dyn aws_lc_rs::signature::VerificationAlgorithm = match algorithm {
                        KeyAlgorithm::P256 => &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
                        KeyAlgorithm::P384 => &aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1,
                        _ => &aws_lc_rs::signature::ED25519,
                    };
                    aws_lc_rs::signature::UnparsedPublicKey::new(verifier, ca.signer.key().public_key())
                        .verify(tbs, signature)
                        .unwrap_or_else(|_| panic!("{what}: the signature does not verify"));
                    // x509-cert reads it back, entry for entry, unless a time is outside RFC 5280's
                    // UTCTime years (which x509-cert refuses as GeneralizedTime, as DER wants).
                    let utc_years = |at: OffsetDateTime| (1950..2050).contains(&at.year());
                    if revoked.iter().all(|entry| utc_years(entry.revoked_at)) && utc_years(this_update) {
                        let parsed = CertificateList::from_der(&ours).unwrap();
                        assert!(parsed.tbs_cert_list.to_der().unwrap() == tbs, "{what}");
                        assert_eq!(read_entries(&ours).unwrap().len(), revoked.len(), "{what}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_crl_whose_next_update_is_not_after_this_update_is_refused() {
        let now = datetime!(2026-11-25 12:00:00 UTC);
        let identity = AuthorityIdentity {
            cluster_name: "c",
            cluster_id: "id",
            kind: AuthorityKind::Operators,
            generation: 1,
        };
        let ca = create_authority(&identity, KeyAlgorithm::Ed25519, now).unwrap();
        let window = CrlWindow { number: 1, this_update: now, next_update: now };
        assert!(sign_crl(&ca.signer, window, &[]).is_err());
        assert!(sign_crl_rcgen(&ca.signer, window, &[]).is_err());
    }

    #[test]
    fn reasons_round_trip_by_name() {
        for reason in RevocationReason::ALL {
            assert_eq!(RevocationReason::parse(reason.as_str()), Some(reason));
        }
    }
}
