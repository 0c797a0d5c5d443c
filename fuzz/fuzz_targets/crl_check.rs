//! `kca::pki::crl_check::check_bundle` on DER: the CA certificates and CRLs crl-sync verifies,
//! past the PEM layer so mutations reach the ASN.1.
//!
//! The first byte picks the mode. Mode 0 (even): `<n><CA 1>..<CA n><CRL 1>..` with the parts
//! separated by `\0KCA\0` and `n` the first byte / 2 mod 4: everything fuzzed, so mutated CRLs
//! mostly fail their signature. Mode 1 (odd): every part is a TBSCertList, which the target signs
//! with the fixed CA's key and checks against that CA: hostile contents behind a valid signature
//! (times, CRL Number, extensions, entries).

#![no_main]

use kca_fuzz::{check_crls, fixed_ca, sign_tbs_cert_list, split_parts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let parts = split_parts(rest);
    let (cas, crls): (Vec<Vec<u8>>, Vec<Vec<u8>>) = if mode % 2 == 0 {
        let n = usize::from(mode / 2 % 4).min(parts.len());
        (parts[..n].iter().map(|p| p.to_vec()).collect(), parts[n..].iter().map(|p| p.to_vec()).collect())
    } else {
        let crls: Vec<Vec<u8>> = parts.iter().map(|tbs| sign_tbs_cert_list(tbs)).collect();
        (vec![fixed_ca().certificate_der.clone(); crls.len()], crls)
    };
    check_crls(&cas, &crls);
});
