//! `kca::pki::crl_check::check_bundle` on CRLs that are well-formed DER, correctly issued and
//! signed by the fixed CA, but whose fields are hostile: times anywhere from 0000 to 9999 (UTCTime
//! or GeneralizedTime, valid or not), a missing nextUpdate, CRL Numbers of any length and sign,
//! missing or wrong key identifiers, unknown and critical extensions, odd entries. Byte-level
//! mutation (`crl_check`) rarely keeps the DER lengths intact; this target builds the DER itself.

#![no_main]

use kca_fuzz::{check_crls, der_tlv, fixed_ca, fixed_ca_subject, sign_tbs_cert_list};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Crl {
    version: Option<u8>,
    this_update: Time,
    next_update: Option<Time>,
    entries: Option<Vec<Entry>>,
    /// The content octets of the CRL Number INTEGER; none leaves the extension out.
    number: Option<Vec<u8>>,
    number_critical: bool,
    key_id: KeyId,
    extensions: Vec<Extension>,
    /// Put the extensions before the CRL Number and AKI rather than after.
    extensions_first: bool,
}

#[derive(Arbitrary, Debug)]
enum Time {
    Utc { year: u8, rest: MonthToSecond },
    Generalized { year: u16, rest: MonthToSecond },
    Raw { tag: u8, value: Vec<u8> },
}

/// The fields both time forms share, each kept within one past its range so that invalid dates
/// are made too.
#[derive(Arbitrary, Debug)]
struct MonthToSecond {
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

impl MonthToSecond {
    fn text(&self) -> String {
        let Self { month, day, hour, minute, second } = self;
        format!("{:02}{:02}{:02}{:02}{:02}Z", month % 14, day % 33, hour % 25, minute % 61, second % 61)
    }
}

#[derive(Arbitrary, Debug)]
enum KeyId {
    TheCa,
    Missing,
    Other(Vec<u8>),
    /// An AKI extension whose value is these bytes (not necessarily an AuthorityKeyIdentifier).
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Entry {
    serial: Vec<u8>,
    revoked_at: Time,
    reason: Option<u8>,
    extensions: Vec<Extension>,
}

#[derive(Arbitrary, Debug)]
struct Extension {
    /// OID content octets; the first few pick well-known ones.
    oid: Oid,
    critical: Option<bool>,
    value: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Oid {
    CrlNumber,
    AuthorityKeyIdentifier,
    ReasonCode,
    DeltaCrlIndicator,
    IssuingDistributionPoint,
    Other(Vec<u8>),
}

fuzz_target!(|crl: Crl| {
    let der = sign_tbs_cert_list(&crl.tbs());
    let cas = vec![fixed_ca().certificate_der.clone()];
    if let Some(checked) = check_crls(&cas, &[der]) {
        assert!(checked[0].number >= 3, "{:?}", checked[0]);
        assert!(crl.next_update.is_some());
    }
});

impl Crl {
    fn tbs(&self) -> Vec<u8> {
        let mut body = Vec::new();
        if let Some(version) = self.version {
            body.extend(der_tlv(0x02, &[version]));
        }
        body.extend_from_slice(&[0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70]);
        body.extend_from_slice(fixed_ca_subject());
        body.extend(self.this_update.der());
        if let Some(next) = &self.next_update {
            body.extend(next.der());
        }
        if let Some(entries) = &self.entries {
            let list: Vec<u8> = entries.iter().flat_map(Entry::der).collect();
            body.extend(der_tlv(0x30, &list));
        }
        let mut extensions: Vec<Vec<u8>> = Vec::new();
        if let Some(number) = &self.number {
            extensions.push(extension(
                &[0x55, 0x1D, 0x14],
                Some(self.number_critical),
                &der_tlv(0x02, number),
            ));
        }
        let aki = |key_id: &[u8]| der_tlv(0x30, &der_tlv(0x80, key_id));
        match &self.key_id {
            KeyId::TheCa => {
                extensions.push(extension(&[0x55, 0x1D, 0x23], None, &aki(fixed_ca().signer.key_id())))
            }
            KeyId::Missing => {}
            KeyId::Other(id) => extensions.push(extension(&[0x55, 0x1D, 0x23], None, &aki(id))),
            KeyId::Raw(value) => extensions.push(extension(&[0x55, 0x1D, 0x23], None, value)),
        }
        let others = self.extensions.iter().map(Extension::der);
        if self.extensions_first {
            extensions.splice(0..0, others);
        } else {
            extensions.extend(others);
        }
        if !extensions.is_empty() {
            body.extend(der_tlv(0xA0, &der_tlv(0x30, &extensions.concat())));
        }
        der_tlv(0x30, &body)
    }
}

impl Time {
    fn der(&self) -> Vec<u8> {
        match self {
            Time::Utc { year, rest } => der_tlv(0x17, format!("{:02}{}", year % 100, rest.text()).as_bytes()),
            Time::Generalized { year, rest } => {
                der_tlv(0x18, format!("{:04}{}", year % 10_000, rest.text()).as_bytes())
            }
            Time::Raw { tag, value } => der_tlv(*tag, value),
        }
    }
}

impl Entry {
    fn der(&self) -> Vec<u8> {
        let mut body = der_tlv(0x02, &self.serial);
        body.extend(self.revoked_at.der());
        let mut extensions: Vec<Vec<u8>> = Vec::new();
        if let Some(reason) = self.reason {
            extensions.push(extension(&[0x55, 0x1D, 0x15], None, &der_tlv(0x0A, &[reason])));
        }
        extensions.extend(self.extensions.iter().map(Extension::der));
        if !extensions.is_empty() {
            body.extend(der_tlv(0x30, &extensions.concat()));
        }
        der_tlv(0x30, &body)
    }
}

impl Extension {
    fn der(&self) -> Vec<u8> {
        let oid: &[u8] = match &self.oid {
            Oid::CrlNumber => &[0x55, 0x1D, 0x14],
            Oid::AuthorityKeyIdentifier => &[0x55, 0x1D, 0x23],
            Oid::ReasonCode => &[0x55, 0x1D, 0x15],
            Oid::DeltaCrlIndicator => &[0x55, 0x1D, 0x1B],
            Oid::IssuingDistributionPoint => &[0x55, 0x1D, 0x1C],
            Oid::Other(content) => content,
        };
        extension(oid, self.critical, &self.value)
    }
}

/// `Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }`;
/// `Some(false)` writes the default out, which DER forbids.
fn extension(oid: &[u8], critical: Option<bool>, value: &[u8]) -> Vec<u8> {
    let mut body = der_tlv(0x06, oid);
    if let Some(critical) = critical {
        body.extend(der_tlv(0x01, &[if critical { 0xFF } else { 0x00 }]));
    }
    body.extend(der_tlv(0x04, value));
    der_tlv(0x30, &body)
}
