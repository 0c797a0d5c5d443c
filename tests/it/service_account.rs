//! Service-account signing keys: `kca pki export` writes `sa.key`/`sa.pub`; a JWT signed with the
//! exported key verifies against `keys.pem` before and after a rotation (both keys verify until the
//! old one is retired); an existing `sa.key` is imported; only an admin reaches any of it, and the
//! export is audited.

use std::path::Path;
use std::process::Command;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::Method;
use serde_json::json;

use crate::common::*;
use crate::pki_import::openssl;
use kca::token::Scope;

const KEYS_PEM: &str = "/v1/clusters/prod/service-account/keys.pem";

/// A service-account token as kube-apiserver signs one, with `key`'s `kid`.
fn token(key_pem: &str, key_id: &str, algorithm: Algorithm) -> String {
    // PKCS#8 for ECDSA, PKCS#1 for RSA: what jsonwebtoken's DER constructors take.
    let der = pem::parse(key_pem).unwrap().into_contents();
    let key = match algorithm {
        Algorithm::ES256 => EncodingKey::from_ec_der(&der),
        _ => EncodingKey::from_rsa_der(&der),
    };
    let mut header = Header::new(algorithm);
    header.kid = Some(key_id.to_string());
    let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 600;
    let claims = json!({"iss": "https://kubernetes.default.svc.cluster.local",
                        "sub": "system:serviceaccount:default:app", "exp": exp});
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

/// Whether one of the public keys of `keys_pem` verifies `token`, as kube-apiserver tries each
/// key of `--service-account-key-file`.
fn verifies(token: &str, keys_pem: &str) -> bool {
    use der::Decode;
    let algorithm = jsonwebtoken::decode_header(token).unwrap().alg;
    let mut validation = Validation::new(algorithm);
    validation.validate_aud = false;
    pem::parse_many(keys_pem).unwrap().iter().any(|block| {
        let spki = spki::SubjectPublicKeyInfoRef::from_der(block.contents()).unwrap();
        let bits = spki.subject_public_key.raw_bytes();
        let rsa = spki.algorithm.oid.to_string() == "1.2.840.113549.1.1.1";
        let key = match (algorithm, rsa) {
            (Algorithm::ES256, false) => DecodingKey::from_ec_der(bits),
            (Algorithm::RS256, true) => DecodingKey::from_rsa_der(bits),
            _ => return false,
        };
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).is_ok()
    })
}

fn export(server: &TestServer, token: &str, dir: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kca"))
        .args(["pki", "export", "prod", "--dir", dir.to_str().unwrap(), "--service-account"])
        .args(extra)
        .env("KCA_URL", &server.url)
        .env("KCA_TOKEN", token)
        .env("KCA_CACERT", server.data_dir.path().join("tls/dev-cert.pem"))
        .env("HOME", dir)
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_keys_rotate_with_overlap_and_export_only_to_an_admin() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_component_cluster(&admin, "prod").await;
    let out = tempfile::tempdir().unwrap();
    let dir = out.path();

    // Narrower tokens reach none of it; the public keys are public.
    for scope in [Scope::ClustersWrite, Scope::KubeconfigsIssue, Scope::Read] {
        let narrow = server.token(&[scope]).await;
        for path in ["keys/rotate", "signing-key/export"] {
            let url = format!("/v1/clusters/prod/service-account/{path}");
            server.json(Method::POST, &url, Some(&narrow), None, 403).await;
        }
        let elsewhere = tempfile::tempdir().unwrap();
        assert!(!export(&server, &narrow, elsewhere.path(), &[]).status.success());
        assert!(!elsewhere.path().join("pki/sa.key").exists());
    }
    let (status, _, empty) = server.send(Method::GET, KEYS_PEM, None, None).await;
    assert_eq!((status.as_u16(), empty.as_str()), (200, ""));

    // kca pki export makes the first key and writes sa.key (0600) and sa.pub (0644).
    let first = export(&server, &admin, dir, &[]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(String::from_utf8_lossy(&first.stderr).contains("made one"));
    let (sa_key, sa_pub) = (dir.join("pki/sa.key"), dir.join("pki/sa.pub"));
    assert_eq!((mode(&sa_key), mode(&sa_pub)), (0o600, 0o644));
    let keys =
        server.json(Method::GET, "/v1/clusters/prod/service-account/keys", Some(&admin), None, 200).await;
    let old_id = keys[0]["key_id"].as_str().unwrap().to_string();
    let old_token = token(&std::fs::read_to_string(&sa_key).unwrap(), &old_id, Algorithm::ES256);
    let (_, _, keys_pem) = server.send(Method::GET, KEYS_PEM, None, None).await;
    assert_eq!(std::fs::read_to_string(&sa_pub).unwrap(), keys_pem);
    assert!(verifies(&old_token, &keys_pem), "the exported key signs what keys.pem verifies");
    // The public key kca serves is the one openssl derives from sa.key.
    let derived = openssl(&["pkey", "-in", sa_key.to_str().unwrap(), "-pubout"]);
    assert_eq!(derived, keys_pem);

    // Rotation: the new key signs, the old one still verifies.
    let rotated = server
        .json(Method::POST, "/v1/clusters/prod/service-account/keys/rotate", Some(&admin), None, 201)
        .await;
    let new_id = rotated["key_id"].as_str().unwrap().to_string();
    assert_ne!(new_id, old_id);
    let again = export(&server, &admin, dir, &["--force"]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let new_token = token(&std::fs::read_to_string(&sa_key).unwrap(), &new_id, Algorithm::ES256);
    let (_, _, keys_pem) = server.send(Method::GET, KEYS_PEM, None, None).await;
    assert_eq!(pem::parse_many(&keys_pem).unwrap().len(), 2);
    assert!(
        verifies(&old_token, &keys_pem) && verifies(&new_token, &keys_pem),
        "both verify during the overlap"
    );

    // The signing key cannot be retired; the old one can, and its tokens stop verifying.
    let retire = |id: &str| format!("/v1/clusters/prod/service-account/keys/{id}/retire");
    server.json(Method::POST, &retire(&new_id), Some(&admin), None, 409).await;
    server.json(Method::POST, &retire(&old_id), Some(&admin), None, 204).await;
    let (_, _, keys_pem) = server.send(Method::GET, KEYS_PEM, None, None).await;
    assert!(!verifies(&old_token, &keys_pem), "a retired key no longer verifies");
    assert!(verifies(&new_token, &keys_pem));

    // kubeadm's RSA sa.key is imported: tokens it signed before verify against kca's keys.pem.
    let kubeadm_key = dir.join("kubeadm-sa.key");
    openssl(&["genrsa", "-traditional", "-out", kubeadm_key.to_str().unwrap(), "2048"]);
    let kubeadm_pem = std::fs::read_to_string(&kubeadm_key).unwrap();
    let bad = server
        .json(
            Method::POST,
            "/v1/clusters/prod/service-account/keys/import",
            Some(&admin),
            Some(
                json!({"private_key_pem": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}),
            ),
            422,
        )
        .await;
    assert_eq!(bad["field"], "private_key_pem");
    let imported = server
        .json(
            Method::POST,
            "/v1/clusters/prod/service-account/keys/import",
            Some(&admin),
            Some(json!({"private_key_pem": kubeadm_pem})),
            201,
        )
        .await;
    assert_eq!(imported["algorithm"], "rsa");
    let kubeadm_token = token(&kubeadm_pem, imported["key_id"].as_str().unwrap(), Algorithm::RS256);
    let (_, _, keys_pem) = server.send(Method::GET, KEYS_PEM, None, None).await;
    assert!(verifies(&kubeadm_token, &keys_pem) && verifies(&new_token, &keys_pem));

    // Each export is audited; no other answer holds a private key; the database holds none in
    // the clear.
    let audit = server.json(Method::GET, "/v1/audit?limit=100", Some(&admin), None, 200).await;
    let exports = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "service_account_key.export")
        .count();
    assert_eq!(exports, 2);
    server.transcript.assert_no_private_key_except("\u{0}");
    let dump =
        run_ok("sqlite3", &[server.data_dir.path().join("kca.db").to_str().unwrap(), ".dump"]).to_uppercase();
    let der = hex::encode_upper(pem::parse(&kubeadm_pem).unwrap().contents());
    assert!(!dump.contains(&der[..64]), "sa.key in the database dump");
}
