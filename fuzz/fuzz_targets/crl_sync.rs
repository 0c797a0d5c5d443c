//! What `kca crl-sync` does with the two documents it fetches, before it writes anything: parse
//! the CA bundle and the CRL bundle as PEM (one label each, `pem_blocks` in src/cli/crl_sync.rs),
//! then `kca::pki::crl_check::check_bundle` at a fixed time with a recorded CRL Number. The
//! input is `<client-ca.pem>\0KCA\0<client-crl.pem>`. Also feeds every CRL to
//! `kca::pki::crl::read_entries` (the revoked-serial map of the server side).

#![no_main]

use std::collections::BTreeMap;

use kca::cli::crl_sync::pem_blocks;
use kca::pki::crl::read_entries;
use kca::pki::crl_check::check_bundle;
use kca_fuzz::{NOW, fixed_ca, split_parts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [ca_text, crl_text] = split_parts(data)[..] else { return };
    let (Some(cas), Some(crls)) =
        (pem_blocks(ca_text, "CERTIFICATE").ok(), pem_blocks(crl_text, "X509 CRL").ok())
    else {
        return;
    };
    for crl in &crls {
        let _ = read_entries(crl);
    }
    let key_id: String = fixed_ca().signer.key_id().iter().map(|b| format!("{b:02x}")).collect();
    let last_numbers = BTreeMap::from([(key_id, 3)]);
    if let Ok(checked) = check_bundle(&cas, &crls, NOW, &last_numbers) {
        assert_eq!(checked.len(), cas.len());
        for crl in &checked {
            assert!(crl.this_update <= NOW && NOW < crl.next_update, "{crl:?}");
            assert!(last_numbers.get(&crl.key_id).is_none_or(|last| crl.number >= *last), "{crl:?}");
        }
    }
});
