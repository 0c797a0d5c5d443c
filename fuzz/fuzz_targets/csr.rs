//! CSRs as clients send them (`csr_pem` of kubeconfig and certificate requests): DER and PEM
//! parsing, key-type detection and self-signature verification must answer an error for anything
//! malformed, never panic. A CSR that verifies is then signed into a leaf the way issuance does.

#![no_main]

use kca::issuance::{SubjectKey, Usage, sign};
use kca::pki::csr::{verify_csr_der, verify_csr_pem};
use kca_fuzz::{NOW, fixed_ca};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(verified) = verify_csr_der(data) {
        assert!(!verified.spki_der.is_empty());
        issue(kca::pki::to_pem("CERTIFICATE REQUEST", data));
    }
    if let Ok(text) = std::str::from_utf8(data)
        && verify_csr_pem(text).is_ok()
    {
        issue(text.to_string());
    }
});

/// Sign the CSR's key into a client certificate, as `POST .../kubeconfigs` does with `csr_pem`.
fn issue(pem: String) {
    let usage = Usage::user("fuzz".into(), vec!["dev".into()], std::time::Duration::from_secs(3600));
    sign(&fixed_ca().signer, &SubjectKey::Csr(pem), &usage, NOW).expect("a verified CSR signs");
}
