//! The small text parsers behind path segments, query strings and CLI flags: serials, CA kinds,
//! key algorithms, reasons, scopes, cluster names, pagination cursors and durations. Arbitrary
//! text must be refused with an error, never a panic; what parses must round-trip.

#![no_main]

use kca::http::pagination::PageParams;
use kca::pki::crl::RevocationReason;
use kca::pki::{AuthorityKind, KeyAlgorithm, Serial};
use kca::token::Scope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(serial) = Serial::parse_hex(text) {
        assert_eq!(Serial::parse_hex(&serial.to_hex()).map(|s| s.to_hex()), Some(serial.to_hex()));
    }
    if let Some(kind) = AuthorityKind::parse(text) {
        assert_eq!(AuthorityKind::parse(kind.as_str()), Some(kind));
    }
    if let Some(algorithm) = KeyAlgorithm::parse(text) {
        assert_eq!(KeyAlgorithm::parse(algorithm.as_str()), Some(algorithm));
    }
    if let Some(reason) = RevocationReason::parse(text) {
        assert_eq!(reason.as_str(), text);
    }
    if let Some(scope) = Scope::parse(text) {
        assert_eq!(scope.as_str(), text);
    }
    let _ = kca::policy::validate_cluster_name(text);
    let _ = kca::config::parse_duration(text);
    let page = PageParams { limit: data.first().map(|b| u32::from(*b) * 3), cursor: Some(text.to_string()) };
    let _ = page.limit();
    let _ = page.cursor();
    let _ = page.cursor_number();
});
