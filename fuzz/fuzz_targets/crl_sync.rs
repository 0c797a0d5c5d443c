//! What `kca crl-sync` does with the two documents it fetches, before it writes anything: parse
//! the CA bundle and the CRL bundle as PEM (one label each, `pem_blocks` in
//! src/cli/crl_sync/verify.rs), then `kca::pki::crl_check::check_bundle` at a fixed time with a
//! recorded CRL Number. The input is `<client-ca.pem>\0KCA\0<client-crl.pem>`. Also feeds every CRL to
//! `kca::pki::crl::read_entries` (the revoked-serial map of the server side).

#![no_main]

use kca::cli::crl_sync::pem_blocks;
use kca_fuzz::{check_crls, split_parts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [ca_text, crl_text] = split_parts(data)[..] else { return };
    let (Some(cas), Some(crls)) =
        (pem_blocks(ca_text, "CERTIFICATE").ok(), pem_blocks(crl_text, "X509 CRL").ok())
    else {
        return;
    };
    check_crls(&cas, &crls);
});
