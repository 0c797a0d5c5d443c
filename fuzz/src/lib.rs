//! What the kca fuzz targets share: a CA and a token signing key that are the same in every
//! process (derived from fixed seeds, so committed seed inputs signed with them keep verifying),
//! the fixed clock, the fixtures the targets feed kca's handlers, and the CRL checks that three
//! targets share.
//!
//! Nothing here is secret: the keys exist only to let fuzzed inputs get past signature checks.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kca::keyring::Keyring;
use kca::pki::crl::read_entries;
use kca::pki::crl_check::{CheckedCrl, check_bundle};
use kca::pki::seal::MasterKey;
use kca::pki::{CaSigner, KeyAlgorithm, SigningKeyPair};
use kca::policy::IssuancePolicy;
use kca::store::Store;
use kca::store::sqlite::SqliteStore;
use kca::token::{Claims, Scope, TokenService};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

/// The clock of every target: CRLs, tokens and certificates of the seeds are current at this time.
pub const NOW: OffsetDateTime = datetime!(2026-11-25 12:00:00 UTC);

/// Separates the parts of a multi-part input (DER blobs, header and claims, ...).
pub const SEP: &[u8] = b"\x00KCA\x00";

/// The token issuer and audience of the fixed token service (kca's defaults).
pub const TOKEN_ISSUER: &str = "kca";
pub const TOKEN_AUDIENCE: &str = "kca";

/// The parts of `data` between separators.
pub fn split_parts(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(SEP.len()).position(|w| w == SEP) {
        parts.push(&rest[..at]);
        rest = &rest[at + SEP.len()..];
    }
    parts.push(rest);
    parts
}

/// The inverse of [`split_parts`].
pub fn join_parts(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(SEP)
}

/// A PKCS#8 v1 Ed25519 key from a one-byte seed.
fn ed25519_pkcs8(seed: u8) -> Vec<u8> {
    let key = Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).expect("a 32-byte Ed25519 seed");
    key.to_pkcs8v1().expect("PKCS#8 of an Ed25519 key").as_ref().to_vec()
}

/// An Ed25519 operators CA made like kca makes them, with a fixed key and serial: the same
/// certificate in every process.
pub struct FixedCa {
    pub certificate_der: Vec<u8>,
    pub pkcs8: Vec<u8>,
    pub signer: CaSigner,
}

pub fn fixed_ca() -> &'static FixedCa {
    static CA: OnceLock<FixedCa> = OnceLock::new();
    CA.get_or_init(|| {
        let pkcs8 = ed25519_pkcs8(0xCA);
        let key = SigningKeyPair::from_pkcs8(KeyAlgorithm::Ed25519, &pkcs8).expect("fixed CA key");
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 5]), "fuzz");
        dn.push(rcgen::DnType::OrganizationName, "kca");
        dn.push(rcgen::DnType::OrganizationalUnitName, "fuzz");
        dn.push(rcgen::DnType::CommonName, "operators CA 1");
        params.distinguished_name = dn;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params.key_identifier_method =
            rcgen::KeyIdMethod::PreSpecified(kca::pki::key_identifier(&key.spki_der()).expect("SPKI"));
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0F; 16]));
        params.not_before = NOW - Duration::days(30);
        params.not_after = NOW + Duration::days(3000);
        let certificate_der = params.self_signed(&key).expect("fixed CA certificate").der().to_vec();
        let signer = CaSigner::load(&certificate_der, KeyAlgorithm::Ed25519, &pkcs8).expect("fixed CA loads");
        FixedCa { certificate_der, pkcs8, signer }
    })
}

/// Wrap a TBSCertList (any bytes) into a CertificateList signed by the fixed CA, as kca signs:
/// `SEQUENCE { tbs, AlgorithmIdentifier(Ed25519), BIT STRING signature }`.
pub fn sign_tbs_cert_list(tbs: &[u8]) -> Vec<u8> {
    let signature = fixed_ca().signer.key().sign_bytes(tbs).expect("Ed25519 signs anything");
    let algorithm = [0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70];
    let mut bit_string = vec![0x00];
    bit_string.extend_from_slice(&signature);
    let mut body = tbs.to_vec();
    body.extend_from_slice(&algorithm);
    body.extend(der_tlv(0x03, &bit_string));
    der_tlv(0x30, &body)
}

/// One DER TLV with a definite length.
pub fn der_tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
    out
}

/// The TLVs inside the constructed TLV at the start of `der`, which must be well-formed DER (this
/// reads kca's own output, never fuzzed input).
pub fn der_children(der: &[u8]) -> Vec<&[u8]> {
    let (_, mut value) = tlv(der);
    let mut children = Vec::new();
    while !value.is_empty() {
        let (whole, _) = tlv(value);
        children.push(whole);
        value = &value[whole.len()..];
    }
    children
}

/// (the whole TLV, its value) at the start of `der`.
fn tlv(der: &[u8]) -> (&[u8], &[u8]) {
    let first = usize::from(der[1]);
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        (der[2..2 + n].iter().fold(0usize, |acc, b| acc << 8 | usize::from(*b)), 2 + n)
    };
    (&der[..header + len], &der[header..header + len])
}

/// The subject Name of the fixed CA, DER: the issuer its CRLs must carry.
pub fn fixed_ca_subject() -> &'static [u8] {
    let certificate = &fixed_ca().certificate_der;
    der_children(der_children(certificate)[0])[5]
}

const TOKEN_KEY_SEED: u8 = 0x70;

/// A token service whose signing key is the fixed one, loaded the way `kca serve` loads it: from
/// a (temporary SQLite) store, sealed under a (fixed) master key.
pub fn token_service() -> &'static TokenService {
    static SERVICE: OnceLock<TokenService> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let dir = std::env::temp_dir().join(format!("kca-fuzz-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let url = format!("sqlite://{}", dir.join("kca.db").display());
        let service = runtime.block_on(async {
            let store = SqliteStore::connect(&url).await.expect("SQLite store");
            store.migrate().await.expect("migrations");
            let (master, _) = MasterKey::generate().expect("master key");
            let sealed = master.seal(&ed25519_pkcs8(TOKEN_KEY_SEED), b"kca:token-signing-key").expect("seal");
            // The setting kca keeps its token key under (`SIGNING_KEY_SETTING` in src/token.rs).
            store.insert_setting_if_absent("token_signing_key", &sealed).await.expect("setting");
            let keyring = Keyring::new(master);
            TokenService::load(&store, &keyring, TOKEN_ISSUER, TOKEN_AUDIENCE).await.expect("token service")
        });
        drop(runtime);
        let _ = std::fs::remove_dir_all(&dir);
        // Fail loudly, not silently lose coverage, if kca stopped reading the key from there.
        let probe = sign_jwt(
            br#"{"alg":"EdDSA","typ":"JWT"}"#,
            br#"{"sub":"probe","iss":"kca","aud":"kca","exp":4102444800,"iat":0,"jti":"p","scopes":[],"clusters":[]}"#,
        );
        service.verify(&probe, OffsetDateTime::now_utc()).expect("the fuzz token key is the service's key");
        service
    })
}

/// A JWT with exactly these header and claims bytes, signed with the fixed token key.
pub fn sign_jwt(header: &[u8], claims: &[u8]) -> String {
    let key = Ed25519KeyPair::from_seed_unchecked(&[TOKEN_KEY_SEED; 32]).expect("seed");
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let signature = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

/// The public half of the fixed token key (for the seeds' sanity checks).
pub fn token_public_key() -> Vec<u8> {
    Ed25519KeyPair::from_seed_unchecked(&[TOKEN_KEY_SEED; 32]).expect("seed").public_key().as_ref().to_vec()
}

fn claims(scopes: Vec<Scope>, groups: Option<Vec<String>>, max_ttl: Option<u64>) -> Claims {
    Claims {
        sub: "fuzz".into(),
        iss: TOKEN_ISSUER.into(),
        aud: TOKEN_AUDIENCE.into(),
        exp: (NOW + Duration::hours(1)).unix_timestamp(),
        iat: NOW.unix_timestamp(),
        jti: "fuzz".into(),
        scopes,
        clusters: vec!["*".into()],
        groups,
        max_ttl,
    }
}

/// The callers a request is decided for: an admin, and a narrow issuing token.
pub fn callers() -> &'static [Claims] {
    static CALLERS: OnceLock<Vec<Claims>> = OnceLock::new();
    CALLERS.get_or_init(|| {
        vec![
            claims(vec![Scope::Admin], None, None),
            claims(
                vec![Scope::KubeconfigsIssue, Scope::Read],
                Some(vec!["dev".into(), "team-*".into(), "?x*".into()]),
                Some(7200),
            ),
        ]
    })
}

/// The policies a request is decided under: the default, and the widest a policy may be.
pub fn policies() -> &'static [IssuancePolicy] {
    static POLICIES: OnceLock<Vec<IssuancePolicy>> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let wide = IssuancePolicy {
            default_ttl_seconds: 1,
            min_ttl_seconds: 1,
            max_ttl_seconds: kca::policy::TTL_CEILING_SECONDS,
            max_groups: kca::policy::GROUPS_CEILING,
            allowed_groups: vec!["*".into(), "system:*".into(), "a*b?c".into()],
            allow_system_masters: true,
        };
        vec![IssuancePolicy::default(), wide]
    })
}

/// The labels a patched cluster starts from.
pub fn current_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("env".into(), "prod".into()), ("team".into(), "platform".into())])
}

/// What crl-sync does with verified DER: every CRL through `read_entries` (must not panic), then
/// `check_bundle` at `NOW` with CRL Number 3 recorded for the fixed CA. What it accepts must hold
/// one CRL per CA, be current at `NOW`, and never go back from a recorded number.
pub fn check_crls(cas: &[Vec<u8>], crls: &[Vec<u8>]) -> Option<Vec<CheckedCrl>> {
    for crl in crls {
        let _ = read_entries(crl);
    }
    let key_id: String = fixed_ca().signer.key_id().iter().map(|b| format!("{b:02x}")).collect();
    let last_numbers = BTreeMap::from([(key_id, 3)]);
    let checked = check_bundle(cas, crls, NOW, &last_numbers).ok()?;
    assert_eq!(checked.len(), cas.len());
    for crl in &checked {
        assert!(crl.this_update <= NOW && NOW < crl.next_update, "{crl:?}");
        assert!(last_numbers.get(&crl.key_id).is_none_or(|last| crl.number >= *last), "{crl:?}");
    }
    Some(checked)
}
