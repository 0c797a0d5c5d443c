//! Checking what was fetched before anything is written: the CRLs against the CAs (issuer, key
//! identifier, signature, freshness, CRL Number never going back, one CRL per CA in bundle order;
//! see `pki::crl_check`) and the map line by line. What passes is re-encoded from what was checked,
//! so nothing else reaches disk or HAProxy.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use time::OffsetDateTime;

use super::Documents;
use crate::pki::crl_check::{CheckedCrl, check_bundle};
use crate::pki::to_pem;

/// Documents that passed the checks.
#[derive(Debug)]
pub struct Verified {
    /// One per CA, in bundle order.
    pub crls: Vec<CheckedCrl>,
    /// The revoked-serial map's entries, when it was fetched.
    pub revoked: Option<Vec<(String, String)>>,
    /// What to write and push, re-encoded; the map is `None` when it was not fetched.
    pub bodies: Documents<Option<Vec<u8>>>,
}

/// Check the fetched CA bundle, CRL bundle and (when fetched) map. `numbers` are the last
/// accepted CRL Numbers, by CA SKI.
pub fn verify(
    ca_bundle: &[u8],
    crl_bundle: &[u8],
    revoked_map: Option<&[u8]>,
    now: OffsetDateTime,
    numbers: &BTreeMap<String, u64>,
) -> anyhow::Result<Verified> {
    let cas = pem_blocks(ca_bundle, "CERTIFICATE").context("client-ca.pem")?;
    let crls = pem_blocks(crl_bundle, "X509 CRL").context("client-crl.pem")?;
    let checked = check_bundle(&cas, &crls, now, numbers)
        .context("the CRLs from kca failed verification; the files are left as they were")?;
    let revoked = revoked_map
        .map(parse_map)
        .transpose()
        .context("revoked.map failed verification; the files are left as they were")?;
    let bodies = Documents {
        ca_bundle: Some(cas.iter().map(|der| to_pem("CERTIFICATE", der)).collect::<String>().into_bytes()),
        crl_bundle: Some(crls.iter().map(|der| to_pem("X509 CRL", der)).collect::<String>().into_bytes()),
        revoked_map: revoked.as_deref().map(|entries| map_text(entries).into_bytes()),
    };
    Ok(Verified { crls: checked, revoked, bodies })
}

impl Verified {
    /// A CRL past half its validity at `now`, if any: kca re-signs before that.
    pub fn past_half_life(&self, now: OffsetDateTime) -> Option<&CheckedCrl> {
        self.crls.iter().find(|c| now > c.this_update + (c.next_update - c.this_update) / 2)
    }

    /// The earliest nextUpdate, RFC 3339 (empty when there is no CRL).
    pub fn next_update(&self) -> String {
        self.crls
            .iter()
            .map(|c| c.next_update)
            .min()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default()
    }

    /// `issuer-key-prefix#number` for each CRL, for the log.
    pub fn describe(&self) -> String {
        self.crls
            .iter()
            .map(|c| format!("{}#{}", &c.key_id[..c.key_id.len().min(8)], c.number))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The DER contents of every PEM block of `text`, which must all carry `label`.
pub fn pem_blocks(text: &[u8], label: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let blocks = pem::parse_many(text).context("not PEM")?;
    if let Some(other) = blocks.iter().find(|b| b.tag() != label) {
        bail!("a {:?} block where only {label:?} blocks belong", other.tag());
    }
    Ok(blocks.into_iter().map(|b| b.into_contents()).collect())
}

/// The revoked-serial map: `<SERIAL HEX UPPERCASE> <reason>` a line, nothing else.
fn parse_map(body: &[u8]) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).context("not UTF-8")?;
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut fields = line.split(' ');
        let (Some(serial), Some(reason), None) = (fields.next(), fields.next(), fields.next()) else {
            bail!("line {} is not `<serial> <reason>`", number + 1);
        };
        let serial_ok = (1..=40).contains(&serial.len())
            && serial.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
        let reason_ok = (1..=32).contains(&reason.len()) && reason.bytes().all(|b| b.is_ascii_alphabetic());
        if !serial_ok || !reason_ok {
            bail!("line {} is not `<SERIAL HEX> <reason>`", number + 1);
        }
        entries.push((serial.to_string(), reason.to_string()));
    }
    Ok(entries)
}

fn map_text(entries: &[(String, String)]) -> String {
    entries.iter().map(|(serial, reason)| format!("{serial} {reason}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_is_serials_and_reasons_only() {
        let entries = parse_map(b"0A1B keyCompromise\n\nFF unspecified\n").unwrap();
        assert_eq!(entries, [("0A1B".into(), "keyCompromise".into()), ("FF".into(), "unspecified".into())]);
        assert_eq!(map_text(&entries), "0A1B keyCompromise\nFF unspecified\n");
        assert!(parse_map(b"").unwrap().is_empty());
        for bad in [
            &b"0a1b keyCompromise\n"[..],
            b"0A1B\n",
            b"0A1B key compromise\n",
            b"0A1B keyCompromise;show info\n",
            b"ZZ unspecified\n",
        ] {
            assert!(parse_map(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn pem_bundles_hold_one_label() {
        let crl = to_pem("X509 CRL", b"\x30\x00");
        assert_eq!(pem_blocks(format!("{crl}{crl}").as_bytes(), "X509 CRL").unwrap().len(), 2);
        let cert = to_pem("CERTIFICATE", b"\x30\x00");
        assert!(pem_blocks(format!("{crl}{cert}").as_bytes(), "X509 CRL").is_err());
        assert!(pem_blocks(to_pem("PRIVATE KEY", b"\x30\x00").as_bytes(), "CERTIFICATE").is_err());
    }
}
