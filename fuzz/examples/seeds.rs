//! Writes the seed corpora under `fuzz/seeds/<target>/`: valid inputs of every kind each target
//! takes, so fuzzing starts from the shapes kca really parses.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds` (from the repository root). The
//! committed seeds were made this way; CSR keys and the P-256/P-384 CAs are random, the token key
//! and the Ed25519 CA are the fixed ones of `kca_fuzz`.

use std::path::{Path, PathBuf};

use kca::pki::ca::{AuthorityIdentity, NewAuthority, create_authority};
use kca::pki::crl::{CrlWindow, RevocationReason, RevokedEntry, sign_crl};
use kca::pki::{AuthorityKind, CaSigner, KeyAlgorithm, Serial, to_pem};
use kca_fuzz::{NOW, der_children, fixed_ca, join_parts, sign_jwt, token_service};
use time::Duration;
// Built with cargo-fuzz's flags (README.md), the coverage hooks come from libFuzzer.
#[cfg(fuzzing)]
use libfuzzer_sys as _;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
    csr(&root.join("csr"));
    request_json(&root.join("request_json"));
    token(&root.join("token"));
    crls(&root);
    path_params(&root.join("path_params"));
    println!("seeds written under {}", root.display());
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(dir).expect("seed directory");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

fn csr(dir: &Path) {
    let algorithms: [(&str, &'static rcgen::SignatureAlgorithm); 4] = [
        ("p256", &rcgen::PKCS_ECDSA_P256_SHA256),
        ("p384", &rcgen::PKCS_ECDSA_P384_SHA384),
        ("ed25519", &rcgen::PKCS_ED25519),
        ("rsa2048", &rcgen::PKCS_RSA_SHA256),
    ];
    for (name, algorithm) in algorithms {
        let key = rcgen::KeyPair::generate_for(algorithm).expect("CSR key");
        let mut params = rcgen::CertificateParams::new(vec!["node-1.example.com".into()]).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, "alice");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "dev");
        let request = params.serialize_request(&key).expect("CSR");
        let der = request.der().to_vec();
        kca::pki::csr::verify_csr_der(&der).expect("the seed CSR verifies");
        write(dir, &format!("{name}.der"), &der);
        write(dir, &format!("{name}.pem"), request.pem().expect("PEM"));
        if name == "p256" {
            write(dir, "p256-new-label.pem", to_pem("NEW CERTIFICATE REQUEST", &der));
        }
    }
}

fn request_json(dir: &Path) {
    let csr = std::fs::read_to_string(dir.parent().expect("seeds").join("csr/p256.pem")).expect("CSR seed");
    let bodies = [
        ("cluster-min", r#"{"name": "prod", "server": "https://k8s.example.com:6443"}"#.to_string()),
        (
            "cluster-full",
            r#"{"name": "prod-eu-1", "server": "https://k8s.example.com:6443/path", "labels": {"env": "prod", "team/a": "x"},
               "policy": {"default_ttl_seconds": 3600, "min_ttl_seconds": 60, "max_ttl_seconds": 28800, "max_groups": 8,
                          "allowed_groups": ["dev", "team-*", "system:masters"], "allow_system_masters": true},
               "key_algorithm": "ed25519"}"#
                .to_string(),
        ),
        ("patch", r#"{"server": "https://[::1]:6443", "policy": {"max_groups": 8}, "labels": {"env": null, "new": "v"}}"#.to_string()),
        ("patch-policy-null", r#"{"policy": {"allowed_groups": null, "max_ttl_seconds": 31622400}}"#.to_string()),
        ("kubeconfig", r#"{"user": "alice", "groups": ["dev", "ops"], "ttl_seconds": 3600, "key_algorithm": "p384"}"#.to_string()),
        ("kubeconfig-masters", r#"{"user": "system:admin", "groups": ["system:masters"]}"#.to_string()),
        (
            "kubeconfig-csr",
            serde_json::json!({"user": "bob", "groups": ["team-a"], "csr_pem": csr}).to_string(),
        ),
        (
            "certificate-apiserver",
            r#"{"profile": "apiserver", "dns_names": ["k8s.example.com"], "ip_addresses": ["10.0.0.1", "::1"],
               "cluster_domain": "cluster.local", "service_ip": "10.96.0.1", "ttl_seconds": 31536000}"#
                .to_string(),
        ),
        ("certificate-etcd", r#"{"profile": "etcd-peer", "common_name": "etcd-1", "dns_names": ["etcd-1.example"]}"#.to_string()),
        (
            "certificate-kubelet",
            r#"{"profile": "kubelet-serving", "common_name": "system:node:worker-1", "organizations": ["system:nodes"],
               "ip_addresses": ["192.168.1.10"], "key_algorithm": "ed25519"}"#
                .to_string(),
        ),
        (
            "certificate-csr",
            serde_json::json!({"profile": "admin", "common_name": "root", "organizations": ["kubeadm:cluster-admins"], "csr_pem": csr}).to_string(),
        ),
        ("revoke", r#"{"reason": "keyCompromise"}"#.to_string()),
        ("revoke-user", r#"{"user": "alice", "reason": "cACompromise"}"#.to_string()),
        ("retire", r#"{"force": true}"#.to_string()),
    ];
    for (name, body) in bodies {
        write(dir, &format!("{name}.json"), body);
    }
}

fn token(dir: &Path) {
    let service = token_service();
    let header = br#"{"alg":"EdDSA","typ":"JWT"}"#;
    // jsonwebtoken checks `exp` against the system clock: 2100-01-01, so the seeds keep verifying.
    let exp = 4_102_444_800_i64;
    let iat = NOW.unix_timestamp();
    let now = time::OffsetDateTime::now_utc();
    let claims = format!(
        r#"{{"sub":"alice","iss":"kca","aud":"kca","exp":{exp},"iat":{iat},"jti":"0b5e","scopes":["kubeconfigs:issue","read"],"clusters":["prod"],"groups":["dev","team-*"],"max_ttl":3600}}"#
    );
    let admin = format!(
        r#"{{"sub":"root","iss":"kca","aud":"kca","exp":{exp},"iat":{iat},"jti":"1","scopes":["admin"],"clusters":["*"]}}"#
    );
    for (name, claims) in [("restricted", &claims), ("admin", &admin)] {
        let token = sign_jwt(header, claims.as_bytes());
        service.verify(&token, now).expect("the seed token verifies");
        write(dir, &format!("{name}.jwt"), &token);
        let mut signed = vec![0];
        signed.extend(join_parts(&[header, claims.as_bytes()]));
        write(dir, &format!("{name}.signed"), signed);
    }
    // Refused shapes: no algorithm, a MAC algorithm, no signature.
    let claims64 = sign_jwt(header, claims.as_bytes()).split('.').nth(1).expect("claims").to_string();
    write(dir, "alg-none.jwt", format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims64}."));
    write(dir, "hs256.jwt", format!("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{claims64}.c2lnbmF0dXJl"));
}

fn authority(algorithm: KeyAlgorithm, generation: i32) -> NewAuthority {
    let identity = AuthorityIdentity {
        cluster_name: "prod",
        cluster_id: "seed",
        kind: AuthorityKind::Operators,
        generation,
    };
    create_authority(&identity, algorithm, NOW - Duration::days(30)).expect("CA")
}

fn crl(signer: &CaSigner, number: u64, entries: usize) -> Vec<u8> {
    let this_update = NOW - Duration::hours(1);
    let window = CrlWindow { number, this_update, next_update: this_update + Duration::days(7) };
    let reasons =
        [RevocationReason::KeyCompromise, RevocationReason::Unspecified, RevocationReason::AaCompromise];
    let entries: Vec<RevokedEntry> = (0..entries)
        .map(|i| RevokedEntry {
            serial: Serial::random().expect("serial"),
            revoked_at: this_update - Duration::minutes(i as i64),
            reason: reasons[i % reasons.len()],
        })
        .collect();
    sign_crl(signer, window, &entries).expect("CRL")
}

/// The TBSCertList of a DER CRL: the first element inside the outer SEQUENCE.
fn tbs(crl: &[u8]) -> &[u8] {
    der_children(crl)[0]
}

/// A CA certificate and a CRL it signed.
type CaAndCrl<'a> = (&'a [u8], Vec<u8>);

fn crls(root: &Path) {
    let p256 = [authority(KeyAlgorithm::P256, 1), authority(KeyAlgorithm::P256, 2)];
    let p384 = authority(KeyAlgorithm::P384, 1);
    let fixed = fixed_ca();
    let bundles: Vec<(&str, Vec<CaAndCrl>)> = vec![
        (
            "p256-two-generations",
            vec![
                (&p256[0].certificate_der, crl(&p256[0].signer, 4, 2)),
                (&p256[1].certificate_der, crl(&p256[1].signer, 9, 0)),
            ],
        ),
        ("p384", vec![(&p384.certificate_der, crl(&p384.signer, 2, 3))]),
        ("ed25519-fixed", vec![(&fixed.certificate_der, crl(&fixed.signer, 5, 1))]),
    ];
    for (name, pairs) in &bundles {
        let cas: Vec<Vec<u8>> = pairs.iter().map(|(ca, _)| ca.to_vec()).collect();
        let crls: Vec<Vec<u8>> = pairs.iter().map(|(_, crl)| crl.clone()).collect();
        let last = std::collections::BTreeMap::new();
        kca::pki::crl_check::check_bundle(&cas, &crls, NOW, &last).expect("the seed bundle checks");

        let ca_pem: String = cas.iter().map(|der| to_pem("CERTIFICATE", der)).collect();
        let crl_pem: String = crls.iter().map(|der| to_pem("X509 CRL", der)).collect();
        write(&root.join("crl_sync"), name, join_parts(&[ca_pem.as_bytes(), crl_pem.as_bytes()]));

        let mut parts: Vec<&[u8]> = cas.iter().map(Vec::as_slice).collect();
        parts.extend(crls.iter().map(Vec::as_slice));
        let mut raw = vec![(cas.len() as u8) * 2];
        raw.extend(join_parts(&parts));
        write(&root.join("crl_check"), &format!("{name}.raw"), raw);
    }
    // Mode 1: TBSCertLists the target signs with the fixed CA.
    let good = crl(&fixed.signer, 7, 2);
    let mut resign = vec![1];
    resign.extend(join_parts(&[tbs(&good)]));
    assert_eq!(kca_fuzz::sign_tbs_cert_list(tbs(&good)), good, "Ed25519 signatures are deterministic");
    write(&root.join("crl_check"), "fixed.tbs", resign);
    let mut two = vec![1];
    two.extend(join_parts(&[tbs(&crl(&fixed.signer, 3, 0)), tbs(&crl(&fixed.signer, 4, 40))]));
    write(&root.join("crl_check"), "fixed-two.tbs", two);
}

fn path_params(dir: &Path) {
    for (name, text) in [
        ("serial", "4A:0B:7C:DD:01:02:03:04:05:06:07:08:09:0A:0B:0C"),
        ("kind", "control-plane"),
        ("algorithm", "ed25519"),
        ("reason", "keyCompromise"),
        ("scope", "certificates:revoke"),
        ("duration", "1h30m"),
        ("cursor", "MTIzNDU"),
    ] {
        write(dir, name, text);
    }
}
