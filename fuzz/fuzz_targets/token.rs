//! Bearer tokens: `TokenService::verify` on arbitrary strings must answer an error, never panic.
//!
//! Two kinds of input. Most are the token text itself (seeds: tokens signed with the fixed key,
//! which verify). An input starting with a NUL byte is `\0<header JSON>\0KCA\0<claims JSON>`: the
//! target signs exactly those bytes with the service's key, so hostile headers and claims get past
//! the signature check to the claim validation and the claims parsing behind it.
//!
//! The seed tokens expire in 2100: jsonwebtoken checks `exp` against the system clock.

#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kca::token::Scope;
use kca_fuzz::{sign_jwt, split_parts, token_service};
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

fuzz_target!(|data: &[u8]| {
    let service = token_service();
    let token = match data.split_first() {
        Some((0, rest)) => match split_parts(rest).as_slice() {
            [header, claims] => sign_jwt(header, claims),
            _ => return,
        },
        _ => match std::str::from_utf8(data) {
            Ok(text) => text.to_string(),
            Err(_) => return,
        },
    };
    // jsonwebtoken checks `exp` against the system clock whatever `now` says, so pass the same.
    let now = OffsetDateTime::now_utc();
    if let Ok(claims) = service.verify(&token, now) {
        // The algorithm is pinned: whatever the header says, only EdDSA verifies.
        let header = token.split('.').next().and_then(|h| URL_SAFE_NO_PAD.decode(h).ok());
        let header: Option<serde_json::Value> = header.and_then(|h| serde_json::from_slice(&h).ok());
        assert_eq!(header.as_ref().and_then(|h| h.get("alg")).and_then(|a| a.as_str()), Some("EdDSA"));
        // What the handlers ask of verified claims next.
        assert!(claims.exp > now.unix_timestamp() - 60, "an expired token verified: {claims:?}");
        let _ = claims.has_scope(Scope::Admin);
        let _ = claims.allows_cluster("prod");
        let _ = claims.cluster_restriction();
        // The verified-token cache answers the same claims.
        assert_eq!(service.verify(&token, now).ok(), Some(claims));
    }
});
