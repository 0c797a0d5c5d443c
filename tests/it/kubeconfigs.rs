//! User kubeconfigs: the certificate profile, CSR signing, policy refusals, and real kubectl.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::Method;
use serde_json::{Value, json};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};

use crate::common::*;
use crate::mtls;
use crate::on_both_backends;
use kca::pki::AuthorityKind;
use kca::token::{Scope, TokenRequest};

on_both_backends!(
    a_kubeconfig_is_issued_recorded_and_verifies,
    every_policy_rule_refuses_and_records_nothing
);

/// Subject CN and O values of a certificate, in order.
pub fn subject_of(cert: &x509_cert::Certificate) -> (String, Vec<String>) {
    use der::asn1::Utf8StringRef;
    let mut cn = String::new();
    let mut orgs = Vec::new();
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for atv in rdn.0.iter() {
            let value = Utf8StringRef::try_from(&atv.value).unwrap().as_str().to_string();
            match atv.oid.to_string().as_str() {
                "2.5.4.3" => cn = value,
                "2.5.4.10" => orgs.push(value),
                other => panic!("unexpected attribute {other}"),
            }
        }
    }
    (cn, orgs)
}

/// Verify a leaf against a CA bundle with rustls-webpki, for client or server authentication.
pub fn webpki_verify(leaf_pem: &str, bundle_pem: &str, client: bool) -> Result<(), webpki::Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, UnixTime};
    let cas: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(bundle_pem.as_bytes()).map(|c| c.unwrap()).collect();
    let anchors: Vec<_> = cas.iter().map(|ca| webpki::anchor_from_trusted_cert(ca).unwrap()).collect();
    let leaf = CertificateDer::from_pem_slice(leaf_pem.as_bytes()).unwrap();
    let leaf = webpki::EndEntityCert::try_from(&leaf).unwrap();
    let usage = if client { webpki::KeyUsage::client_auth() } else { webpki::KeyUsage::server_auth() };
    leaf.verify_for_usage(webpki::ALL_VERIFICATION_ALGS, &anchors, &[], UnixTime::now(), usage, None, None)
        .map(|_| ())
}

/// A CSR for a fresh key, with a subject that must be ignored.
pub fn hostile_csr() -> String {
    let (key, _) = kca::pki::SigningKeyPair::generate(kca::pki::KeyAlgorithm::P256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, "mallory");
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:masters");
    params.serialize_request(&key).unwrap().pem().unwrap()
}

async fn issue(server: &TestServer, token: &str, cluster: &str, body: Value, expect: u16) -> Value {
    server
        .json(Method::POST, &format!("/v1/clusters/{cluster}/kubeconfigs"), Some(token), Some(body), expect)
        .await
}

async fn a_kubeconfig_is_issued_recorded_and_verifies(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token(&[Scope::Admin]).await;
    let issuer = server.token(&[Scope::KubeconfigsIssue]).await;
    server.create_cluster(&admin, "prod").await;
    let operators =
        server.json(Method::GET, "/v1/clusters/prod/authorities/operators", None, None, 200).await;
    let operators_pem = operators["certificate_pem"].as_str().unwrap();
    let control_plane =
        server.json(Method::GET, "/v1/clusters/prod/authorities/control-plane", None, None, 200).await;
    let scratch = tempfile::tempdir().unwrap();

    let before = time::OffsetDateTime::now_utc();
    let issued = issue(
        &server,
        &issuer,
        "prod",
        json!({"user": "alice", "groups": ["dev", "ops"], "ttl_seconds": 3600}),
        201,
    )
    .await;
    let cert_pem = issued["certificate_pem"].as_str().unwrap();
    let cert = parse_certificate(cert_pem);
    let tbs = &cert.tbs_certificate;

    // Profile: CN = user, one O per group in order, clientAuth only, digitalSignature, CA:FALSE, AKI, SKI.
    assert_eq!(subject_of(&cert), ("alice".to_string(), vec!["dev".to_string(), "ops".to_string()]));
    let (_, eku) = tbs.get::<ExtendedKeyUsage>().unwrap().unwrap();
    assert_eq!(eku.0.iter().map(|o| o.to_string()).collect::<Vec<_>>(), ["1.3.6.1.5.5.7.3.2"]);
    let (critical, ku) = tbs.get::<KeyUsage>().unwrap().unwrap();
    assert!(critical);
    assert!(ku.digital_signature() && !ku.key_encipherment() && !ku.key_cert_sign());
    let (critical, bc) = tbs.get::<BasicConstraints>().unwrap().unwrap();
    assert!(critical && !bc.ca);
    let ca_cert = parse_certificate(operators_pem);
    let (_, ca_ski) = ca_cert.tbs_certificate.get::<SubjectKeyIdentifier>().unwrap().unwrap();
    let (_, aki) = tbs.get::<AuthorityKeyIdentifier>().unwrap().unwrap();
    assert_eq!(aki.key_identifier.unwrap(), ca_ski.0);
    assert!(tbs.get::<SubjectKeyIdentifier>().unwrap().is_some());
    let serial = tbs.serial_number.as_bytes();
    assert!(serial.len() <= 20 && serial.len() >= 9 && serial[0] & 0x80 == 0, "positive, ≥ 64 random bits");
    assert_eq!(hex::encode_upper(serial), issued["serial"].as_str().unwrap());
    let not_before = tbs.validity.not_before.to_unix_duration().as_secs() as i64;
    let not_after = tbs.validity.not_after.to_unix_duration().as_secs() as i64;
    assert!((not_before - (before.unix_timestamp() - 300)).abs() <= 5, "notBefore = now - 5 min");
    assert!((not_after - (before.unix_timestamp() + 3600)).abs() <= 5, "notAfter = now + TTL");

    // It verifies for client auth (webpki and openssl) and not for server auth.
    webpki_verify(cert_pem, operators_pem, true).unwrap();
    assert!(webpki_verify(cert_pem, operators_pem, false).is_err());
    let ca_file = temp_file(scratch.path(), "operators.pem", operators_pem.as_bytes());
    let cert_file = temp_file(scratch.path(), "alice.pem", cert_pem.as_bytes());
    let (ca_file, cert_file) = (ca_file.to_str().unwrap(), cert_file.to_str().unwrap());
    assert!(
        run_ok("openssl", &["verify", "-purpose", "sslclient", "-CAfile", ca_file, cert_file])
            .contains(": OK")
    );
    let as_server = std::process::Command::new("openssl")
        .args(["verify", "-purpose", "sslserver", "-CAfile", ca_file, cert_file])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&as_server.stderr);
    assert!(!as_server.status.success(), "{stderr}");
    assert!(stderr.contains("error 26 at 0 depth lookup: unsuitable certificate purpose"), "{stderr}");
    // The control-plane CA does not vouch for it.
    assert!(webpki_verify(cert_pem, control_plane["certificate_pem"].as_str().unwrap(), true).is_err());

    // The generated key matches the certificate.
    let key_pem = issued["private_key_pem"].as_str().unwrap();
    let key_file = temp_file(scratch.path(), "alice.key", key_pem.as_bytes());
    let key_public = run_ok("openssl", &["pkey", "-in", key_file.to_str().unwrap(), "-pubout"]);
    let cert_public = run_ok("openssl", &["x509", "-in", cert_file, "-noout", "-pubkey"]);
    assert_eq!(key_public, cert_public);

    // The kubeconfig: one cluster, user and context; string values only under user.
    let kubeconfig: serde_norway::Value =
        serde_norway::from_str(issued["kubeconfig"].as_str().unwrap()).unwrap();
    assert_eq!(kubeconfig["apiVersion"], "v1");
    assert_eq!(kubeconfig["kind"], "Config");
    assert_eq!(kubeconfig["current-context"], "alice@prod");
    assert_eq!(kubeconfig["clusters"][0]["name"], "prod");
    assert_eq!(kubeconfig["clusters"][0]["cluster"]["server"], "https://k8s.example:6443");
    let ca_data = STANDARD
        .decode(kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"].as_str().unwrap())
        .unwrap();
    assert_eq!(String::from_utf8(ca_data).unwrap(), control_plane["certificate_pem"].as_str().unwrap());
    assert_eq!(issued["ca_pem"], control_plane["certificate_pem"]);
    let user = kubeconfig["users"][0]["user"].as_mapping().unwrap();
    assert!(user.values().all(|v| v.is_string()));
    let cert_data = STANDARD.decode(user["client-certificate-data"].as_str().unwrap()).unwrap();
    assert_eq!(String::from_utf8(cert_data).unwrap(), cert_pem);
    let key_data = STANDARD.decode(user["client-key-data"].as_str().unwrap()).unwrap();
    assert_eq!(String::from_utf8(key_data).unwrap(), key_pem);

    // Accept: application/yaml gives the kubeconfig alone.
    let response = server
        .client
        .post(format!("{}/v1/clusters/prod/kubeconfigs", server.url))
        .bearer_auth(&issuer)
        .header("accept", "application/yaml")
        .json(&json!({"user": "bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["content-type"], "application/yaml");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let yaml = response.text().await.unwrap();
    assert!(yaml.starts_with("apiVersion: v1"), "{yaml}");

    // Other key algorithms.
    for algorithm in ["ed25519", "p384"] {
        let issued =
            issue(&server, &issuer, "prod", json!({"user": "carol", "key_algorithm": algorithm}), 201).await;
        webpki_verify(issued["certificate_pem"].as_str().unwrap(), operators_pem, true).unwrap();
        let key_file =
            temp_file(scratch.path(), "k.pem", issued["private_key_pem"].as_str().unwrap().as_bytes());
        run_ok("openssl", &["pkey", "-in", key_file.to_str().unwrap(), "-noout"]);
    }

    // CSR: the request decides CN and O, never the CSR; no key comes back.
    let from_csr = issue(
        &server,
        &issuer,
        "prod",
        json!({"user": "dave", "groups": ["dev"], "csr_pem": hostile_csr()}),
        201,
    )
    .await;
    assert!(from_csr.get("private_key_pem").is_none());
    let cert = parse_certificate(from_csr["certificate_pem"].as_str().unwrap());
    assert_eq!(subject_of(&cert), ("dave".to_string(), vec!["dev".to_string()]));
    let kubeconfig: serde_norway::Value =
        serde_norway::from_str(from_csr["kubeconfig"].as_str().unwrap()).unwrap();
    assert!(kubeconfig["users"][0]["user"].get("client-key-data").is_none());

    // A CSR with a bad signature is refused, and nothing is recorded.
    let listed_before =
        server.json(Method::GET, "/v1/clusters/prod/certificates", Some(&admin), None, 200).await;
    let good = hostile_csr();
    let mut der = pem::parse(&good).unwrap().into_contents();
    let at = der.windows(7).position(|w| w == b"mallory").unwrap();
    der[at] ^= 1;
    let tampered = kca::pki::to_pem("CERTIFICATE REQUEST", &der);
    let problem = issue(&server, &issuer, "prod", json!({"user": "eve", "csr_pem": tampered}), 422).await;
    assert_eq!(problem["field"], "csr_pem");
    issue(&server, &issuer, "prod", json!({"user": "eve", "csr_pem": "garbage"}), 422).await;
    issue(&server, &issuer, "prod", json!({"user": "eve", "csr_pem": good, "key_algorithm": "p256"}), 422)
        .await;
    let listed_after =
        server.json(Method::GET, "/v1/clusters/prod/certificates", Some(&admin), None, 200).await;
    assert_eq!(listed_before, listed_after);

    // Recorded: metadata, PEM, who issued it; listing filters by user and status.
    let serial = issued["serial"].as_str().unwrap();
    let record = server
        .json(Method::GET, &format!("/v1/clusters/prod/certificates/{serial}"), Some(&admin), None, 200)
        .await;
    assert_eq!(record["common_name"], "alice");
    assert_eq!(record["groups"], json!(["dev", "ops"]));
    assert_eq!(record["profile"], "user");
    assert_eq!(record["kind"], "operators");
    assert_eq!(record["generation"], 1);
    assert_eq!(record["issued_by"], "tester");
    assert_eq!(record["status"], "active");
    assert_eq!(record["certificate_pem"], issued["certificate_pem"]);
    assert_eq!(record["fingerprint_sha256"], issued["fingerprint_sha256"]);
    let lower = serial.to_lowercase();
    server
        .json(Method::GET, &format!("/v1/clusters/prod/certificates/{lower}"), Some(&admin), None, 200)
        .await;
    server.json(Method::GET, "/v1/clusters/prod/certificates/00FF", Some(&admin), None, 404).await;
    server.json(Method::GET, "/v1/clusters/prod/certificates/zz", Some(&admin), None, 404).await;
    let alices =
        server.json(Method::GET, "/v1/clusters/prod/certificates?user=alice", Some(&admin), None, 200).await;
    assert_eq!(alices["items"].as_array().unwrap().len(), 1);
    let all = server
        .json(Method::GET, "/v1/clusters/prod/certificates?status=active&limit=2", Some(&admin), None, 200)
        .await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let cursor = all["next_cursor"].as_str().unwrap();
    let rest = server
        .json(
            Method::GET,
            &format!("/v1/clusters/prod/certificates?status=active&cursor={cursor}"),
            Some(&admin),
            None,
            200,
        )
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 3, "alice, bob, 2 × carol, dave: 5 in all");
    let revoked = server
        .json(Method::GET, "/v1/clusters/prod/certificates?status=revoked", Some(&admin), None, 200)
        .await;
    assert!(revoked["items"].as_array().unwrap().is_empty());
    server.json(Method::GET, "/v1/clusters/prod/certificates?status=bogus", Some(&admin), None, 400).await;
    let audit = server.json(Method::GET, "/v1/audit", Some(&admin), None, 200).await;
    let issues =
        audit["items"].as_array().unwrap().iter().filter(|e| e["action"] == "certificate.issue").count();
    assert_eq!(issues, 5);

    // Reading certificates never shows a key; issuing needs its scope.
    server.transcript.assert_no_private_key_except("/kubeconfigs");
    let reader = server.token(&[Scope::Read]).await;
    issue(&server, &reader, "prod", json!({"user": "x"}), 403).await;
    let other_cluster = server.token_for(&[Scope::KubeconfigsIssue], &["staging"]).await;
    issue(&server, &other_cluster, "prod", json!({"user": "x"}), 403).await;
    issue(&server, &issuer, "nowhere", json!({"user": "x"}), 404).await;
}

async fn every_policy_rule_refuses_and_records_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token(&[Scope::Admin]).await;
    server
        .json(
            Method::POST,
            "/v1/clusters",
            Some(&admin),
            Some(json!({"name": "strict", "server": "https://k:6443", "policy": {
                "min_ttl_seconds": 300, "max_ttl_seconds": 7200, "default_ttl_seconds": 600,
                "max_groups": 2, "allowed_groups": ["team-*", "viewers"]
            }})),
            201,
        )
        .await;
    server
        .json(
            Method::POST,
            "/v1/clusters",
            Some(&admin),
            Some(
                json!({"name": "open", "server": "https://k:6443", "policy": {"allow_system_masters": true}}),
            ),
            201,
        )
        .await;
    let issuer = server.token(&[Scope::KubeconfigsIssue]).await;
    let narrow = server
        .mint(&TokenRequest {
            subject: "narrow".into(),
            scopes: vec![Scope::KubeconfigsIssue],
            clusters: vec!["*".into()],
            groups: Some(vec!["team-a".into()]),
            max_ttl: Some(900),
            ttl: time::Duration::hours(1),
            person: None,
        })
        .await;

    // (cluster, token, request, status, rule, field)
    type Case<'a> = (&'a str, &'a str, Value, u16, Option<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "strict",
            &issuer,
            json!({"user": "a", "ttl_seconds": 60}),
            403,
            Some("min_ttl_seconds"),
            "ttl_seconds",
        ),
        (
            "strict",
            &issuer,
            json!({"user": "a", "ttl_seconds": 7201}),
            403,
            Some("max_ttl_seconds"),
            "ttl_seconds",
        ),
        (
            "strict",
            &issuer,
            json!({"user": "a", "groups": ["team-a", "team-b", "viewers"]}),
            403,
            Some("max_groups"),
            "groups",
        ),
        (
            "strict",
            &issuer,
            json!({"user": "a", "groups": ["team-a", "admins"]}),
            403,
            Some("allowed_groups"),
            "groups[1]",
        ),
        (
            "strict",
            &issuer,
            json!({"user": "a", "groups": ["system:masters"]}),
            403,
            Some("privileged_identity"),
            "groups[0]",
        ),
        (
            "open",
            &issuer,
            json!({"user": "a", "groups": ["system:masters"]}),
            403,
            Some("privileged_identity"),
            "groups[0]",
        ),
        (
            "strict",
            &narrow,
            json!({"user": "a", "groups": ["viewers"]}),
            403,
            Some("token_groups"),
            "groups[0]",
        ),
        (
            "strict",
            &narrow,
            json!({"user": "a", "groups": ["team-a"], "ttl_seconds": 1000}),
            403,
            Some("token_max_ttl"),
            "ttl_seconds",
        ),
        (
            "strict",
            &issuer,
            json!({"user": "system:kube-scheduler"}),
            403,
            Some("privileged_identity"),
            "user",
        ),
        ("strict", &issuer, json!({"user": "a,b"}), 422, None, "user"),
        ("strict", &issuer, json!({"user": " a"}), 422, None, "user"),
        ("strict", &issuer, json!({"user": "a", "groups": ["x".repeat(65)]}), 422, None, "groups[0]"),
        ("strict", &issuer, json!({"user": "a", "groups": ["team-a", "team-a"]}), 422, None, "groups[1]"),
        ("strict", &issuer, json!({"user": "a", "ttl_seconds": 0}), 422, None, "ttl_seconds"),
        ("strict", &issuer, json!({"user": ""}), 422, None, "user"),
    ];
    for (cluster, token, body, status, rule, field) in cases {
        let problem = issue(&server, token, cluster, body.clone(), status).await;
        assert_eq!(problem["rule"].as_str(), rule, "{body}");
        assert_eq!(problem["field"], field, "{body}");
        assert!(!problem["detail"].as_str().unwrap().is_empty());
    }
    for cluster in ["strict", "open"] {
        let listed = server
            .json(Method::GET, &format!("/v1/clusters/{cluster}/certificates"), Some(&admin), None, 200)
            .await;
        assert!(listed["items"].as_array().unwrap().is_empty(), "a refusal recorded a certificate");
    }
    let audit = server.json(Method::GET, "/v1/audit", Some(&admin), None, 200).await;
    assert!(audit["items"].as_array().unwrap().iter().all(|e| e["action"] != "certificate.issue"));

    // What the rules allow goes through: the default TTL, an admin issuing system:masters.
    let ok = issue(&server, &narrow, "strict", json!({"user": "a", "groups": ["team-a"]}), 201).await;
    let cert = parse_certificate(ok["certificate_pem"].as_str().unwrap());
    let lifetime = cert.tbs_certificate.validity.not_after.to_unix_duration().as_secs()
        - cert.tbs_certificate.validity.not_before.to_unix_duration().as_secs();
    assert_eq!(lifetime, 600 + 300, "default TTL plus the 5-minute backdating");
    issue(&server, &admin, "open", json!({"user": "root", "groups": ["system:masters"]}), 201).await;
}

/// The CA key of a cluster's authority signs a serving certificate for 127.0.0.1, as an
/// apiserver certificate from the control-plane CA would be.
pub async fn serving_certificate(
    server: &TestServer,
    cluster: &str,
    kind: AuthorityKind,
) -> (String, String) {
    let snapshot = server.app.snapshot(cluster).await.unwrap();
    let authority = snapshot.signer(kind).unwrap();
    let ca = server.app.keyring.signer(authority).unwrap();
    let usage = kca::issuance::Usage {
        common_name: "kube-apiserver".into(),
        organizations: vec![],
        extended_usages: vec![kca::pki::leaf::ExtendedUsage::ServerAuth],
        dns_names: vec!["localhost".into()],
        ip_addresses: vec!["127.0.0.1".parse().unwrap()],
        ttl: std::time::Duration::from_secs(3600),
    };
    let key = kca::issuance::SubjectKey::Generate(kca::pki::KeyAlgorithm::P256);
    let signed = kca::issuance::sign(&ca, &key, &usage, time::OffsetDateTime::now_utc()).unwrap();
    (signed.leaf.pem, signed.private_key_pem.unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_the_kubeconfig_and_authenticates_with_it() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    let listener = mtls::bind().await;
    let port = listener.local_addr().unwrap().port();
    server
        .json(
            Method::POST,
            "/v1/clusters",
            Some(&admin),
            Some(json!({"name": "prod", "server": format!("https://127.0.0.1:{port}")})),
            201,
        )
        .await;
    let (cert, key) = serving_certificate(&server, "prod", AuthorityKind::ControlPlane).await;
    let operators =
        server.json(Method::GET, "/v1/clusters/prod/authorities/operators", None, None, 200).await;
    let apiserver = mtls::serve(listener, &cert, &key, operators["certificate_pem"].as_str().unwrap());

    let response = server
        .client
        .post(format!("{}/v1/clusters/prod/kubeconfigs", server.url))
        .bearer_auth(&admin)
        .header("accept", "application/yaml")
        .json(&json!({"user": "alice", "groups": ["dev", "ops", "viewers"], "ttl_seconds": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = temp_file(dir.path(), "kubeconfig", &response.bytes().await.unwrap());
    let kubeconfig = kubeconfig.to_str().unwrap();

    let view = run_ok("kubectl", &["config", "view", "--raw", "--kubeconfig", kubeconfig, "-o", "json"]);
    let view: Value = serde_json::from_str(&view).unwrap();
    assert_eq!(view["current-context"], "alice@prod");
    assert_eq!(view["users"][0]["name"], "alice");
    assert!(view["users"][0]["user"]["client-certificate-data"].as_str().unwrap().len() > 100);

    let version = tokio::task::spawn_blocking({
        let kubeconfig = kubeconfig.to_string();
        move || run_ok("kubectl", &["--kubeconfig", &kubeconfig, "get", "--raw", "/version"])
    })
    .await
    .unwrap();
    assert!(version.contains("v1.32.0-kca-test"), "{version}");
    let peers = apiserver.peers.lock().unwrap().clone();
    assert!(!peers.is_empty());
    assert!(peers.iter().all(|p| p.common_name == "alice" && p.organizations == ["dev", "ops", "viewers"]));
}
