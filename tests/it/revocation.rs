//! Revocation and CRLs: what openssl accepts and rejects, numbering, concurrency, caching, outages.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;
use crate::on_both_backends;
use kca::token::Scope;

on_both_backends!(revoking_publishes_a_crl_that_openssl_enforces, concurrent_revocations_all_reach_the_crl);

pub async fn issue_user(
    server: &TestServer,
    token: &str,
    cluster: &str,
    user: &str,
    groups: &[&str],
) -> Value {
    server
        .json(
            Method::POST,
            &format!("/v1/clusters/{cluster}/kubeconfigs"),
            Some(token),
            Some(json!({"user": user, "groups": groups})),
            201,
        )
        .await
}

/// Number and entries of a DER CRL.
pub fn crl_facts(der: &[u8]) -> (u64, Vec<String>) {
    use der::Decode;
    let crl = x509_cert::crl::CertificateList::from_der(der).unwrap();
    let number_oid = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.20");
    let number = crl
        .tbs_cert_list
        .crl_extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == number_oid)
        .map(|e| {
            let value = der::asn1::UintRef::from_der(e.extn_value.as_bytes()).unwrap();
            value.as_bytes().iter().fold(0u64, |n, b| n << 8 | u64::from(*b))
        })
        .unwrap();
    let serials = crl
        .tbs_cert_list
        .revoked_certificates
        .iter()
        .flatten()
        .map(|e| hex::encode_upper(e.serial_number.as_bytes()))
        .collect();
    (number, serials)
}

pub async fn crl_der(server: &TestServer, cluster: &str, kind: &str) -> Vec<u8> {
    let response = server
        .client
        .get(format!("{}/v1/clusters/{cluster}/authorities/{kind}/crl", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/pkix-crl");
    response.bytes().await.unwrap().to_vec()
}

async fn revoking_publishes_a_crl_that_openssl_enforces(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token(&[Scope::Admin]).await;
    let revoker = server.token(&[Scope::CertificatesRevoke]).await;
    server.create_cluster(&admin, "prod").await;
    let scratch = tempfile::tempdir().unwrap();

    // Every CA has a CRL from the start, empty, numbered after the clock (microseconds).
    let created = time::OffsetDateTime::now_utc();
    let mut first_number = 0;
    for kind in ["etcd", "control-plane", "operators", "kubelet", "aggregation"] {
        let (number, serials) = crl_facts(&crl_der(&server, "prod", kind).await);
        assert_eq!(serials.len(), 0, "{kind}");
        let age = (created.unix_timestamp_nanos() / 1_000) as i64 - number as i64;
        assert!((0..60_000_000).contains(&age), "{kind}: CRL Number {number} is not the creation time");
        first_number = number;
    }

    let alice = issue_user(&server, &admin, "prod", "alice", &["dev"]).await;
    let alice2 = issue_user(&server, &admin, "prod", "alice", &["ops"]).await;
    let bob = issue_user(&server, &admin, "prod", "bob", &[]).await;
    let serial = alice["serial"].as_str().unwrap();

    // Revoke one: the answer is the revoked certificate; the CRL lists it at once.
    let path = format!("/v1/clusters/prod/certificates/{serial}/revoke");
    let revoked =
        server.json(Method::POST, &path, Some(&revoker), Some(json!({"reason": "keyCompromise"})), 200).await;
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revocation_reason"], "keyCompromise");
    let (second_number, serials) = crl_facts(&crl_der(&server, "prod", "operators").await);
    assert!(second_number > first_number);
    assert_eq!(serials, [serial]);
    // Idempotent: same revoked_at, 200.
    let again =
        server.json(Method::POST, &path, Some(&revoker), Some(json!({"reason": "superseded"})), 200).await;
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);
    assert_eq!(again["revocation_reason"], "keyCompromise");
    // An empty body means `unspecified`; unknown serials are 404; the scope is needed.
    server
        .json(Method::POST, "/v1/clusters/prod/certificates/0A0B0C/revoke", Some(&revoker), None, 404)
        .await;
    server.json(Method::POST, &path, Some(&server.token(&[Scope::Read]).await), None, 403).await;
    server.json(Method::POST, &path, Some(&revoker), Some(json!({"reason": "certificateHold"})), 400).await;

    // openssl: the CRL verifies; a revoked certificate is rejected, a live one accepted.
    let ca = server.json(Method::GET, "/v1/clusters/prod/authorities/operators", None, None, 200).await;
    let ca_file = temp_file(scratch.path(), "ca.pem", ca["certificate_pem"].as_str().unwrap().as_bytes());
    let (_, _, crl_pem) =
        server.send(Method::GET, "/v1/clusters/prod/authorities/operators/crl.pem", None, None).await;
    let crl_file = temp_file(scratch.path(), "crl.pem", crl_pem.as_bytes());
    let (ca_file, crl_file) = (ca_file.to_str().unwrap(), crl_file.to_str().unwrap());
    let checked = std::process::Command::new("openssl")
        .args(["crl", "-in", crl_file, "-CAfile", ca_file, "-noout", "-verify"])
        .output()
        .unwrap();
    assert!(checked.status.success() && String::from_utf8_lossy(&checked.stderr).contains("verify OK"));
    let verify = |cert: &Value| {
        let file =
            temp_file(scratch.path(), "leaf.pem", cert["certificate_pem"].as_str().unwrap().as_bytes());
        std::process::Command::new("openssl")
            .args(["verify", "-crl_check", "-CAfile", ca_file, "-CRLfile", crl_file, file.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let refused = verify(&alice);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("error 23 at 0 depth lookup: certificate revoked"), "{stderr}");
    let accepted = verify(&bob);
    assert!(accepted.status.success(), "{}", String::from_utf8_lossy(&accepted.stderr));
    assert!(String::from_utf8_lossy(&accepted.stdout).contains(": OK"));

    // Revoke a user: every live certificate of alice, and only hers.
    let result = server
        .json(
            Method::POST,
            "/v1/clusters/prod/revocations",
            Some(&revoker),
            Some(json!({"user": "alice"})),
            200,
        )
        .await;
    assert_eq!(result["serials"], json!([alice2["serial"]]));
    let (number, serials) = crl_facts(&crl_der(&server, "prod", "operators").await);
    assert!(number > second_number);
    assert_eq!(serials.len(), 2);
    let none = server
        .json(
            Method::POST,
            "/v1/clusters/prod/revocations",
            Some(&revoker),
            Some(json!({"user": "alice"})),
            200,
        )
        .await;
    assert_eq!(none["serials"], json!([]));
    let listed = server
        .json(Method::GET, "/v1/clusters/prod/certificates?status=revoked", Some(&admin), None, 200)
        .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);

    // The HAProxy map lists both, uppercase hex and reason.
    let (_, _, map) = server.send(Method::GET, "/v1/clusters/prod/revoked.map", None, None).await;
    let mut lines: Vec<&str> = map.lines().collect();
    lines.sort();
    let mut expected = vec![
        format!("{serial} keyCompromise"),
        format!("{} unspecified", alice2["serial"].as_str().unwrap()),
    ];
    expected.sort();
    assert_eq!(lines, expected);

    // Audit: both revocations, by their actor.
    let audit = server.json(Method::GET, "/v1/audit", Some(&admin), None, 200).await;
    let actions: Vec<&str> =
        audit["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"certificate.revoke") && actions.contains(&"certificate.revoke_user"));
    server.transcript.assert_no_private_key_except("/kubeconfigs");
}

async fn concurrent_revocations_all_reach_the_crl(backend: Backend) {
    let server = std::sync::Arc::new(TestServer::start(backend).await);
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "busy").await;
    let mut serials = Vec::new();
    for i in 0..200 {
        let issued = issue_user(&server, &admin, "busy", &format!("user-{i}"), &[]).await;
        serials.push(issued["serial"].as_str().unwrap().to_string());
    }
    let published = |server: &TestServer| {
        let metrics = server.app.render_metrics(time::OffsetDateTime::now_utc(), &[]);
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("kca_crls_published_total "))
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    let published_before = published(&server);
    // 200 revocations from 8 tasks at once.
    let mut tasks = Vec::new();
    for chunk in serials.chunks(25) {
        let server = server.clone();
        let admin = admin.clone();
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            for serial in chunk {
                let path = format!("/v1/clusters/busy/certificates/{serial}/revoke");
                server.json(Method::POST, &path, Some(&admin), None, 200).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (number, listed) = crl_facts(&crl_der(&server, "busy", "operators").await);
    let mut listed = listed;
    listed.sort();
    serials.sort();
    assert_eq!(listed, serials, "every revocation is in the CRL");
    let count = published(&server) - published_before;
    assert!((1..=200).contains(&count), "coalesced: {count} CRLs for 200 revocations");
    assert!(number > 1_700_000_000_000_000, "a CRL Number after the clock: {number}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crl_numbers_strictly_increase_across_restarts() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let server = TestServer::start(backend).await;
        let admin = server.token(&[Scope::Admin]).await;
        server.create_cluster(&admin, "prod").await;
        let mut seen = vec![crl_facts(&crl_der(&server, "prod", "operators").await).0];
        for _ in 0..5 {
            let issued = issue_user(&server, &admin, "prod", "u", &[]).await;
            let path =
                format!("/v1/clusters/prod/certificates/{}/revoke", issued["serial"].as_str().unwrap());
            server.json(Method::POST, &path, Some(&admin), None, 200).await;
            seen.push(crl_facts(&crl_der(&server, "prod", "operators").await).0);
        }
        let (data_dir, database) = server.stop().await;
        let restarted = TestServer::resume(data_dir, database).await;
        let admin = restarted.token(&[Scope::Admin]).await;
        seen.push(crl_facts(&crl_der(&restarted, "prod", "operators").await).0);
        let issued = issue_user(&restarted, &admin, "prod", "u", &[]).await;
        let path = format!("/v1/clusters/prod/certificates/{}/revoke", issued["serial"].as_str().unwrap());
        restarted.json(Method::POST, &path, Some(&admin), None, 200).await;
        let (number, entries) = crl_facts(&crl_der(&restarted, "prod", "operators").await);
        seen.push(number);
        assert_eq!(entries.len(), 6);
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{backend:?}: {seen:?}");
        assert!(seen.windows(2).filter(|w| w[0] < w[1]).count() >= 6, "{backend:?}: {seen:?}");
        assert!(*seen.last().unwrap() > seen[5], "{backend:?}: a higher number after the restart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_carry_validators_and_bundles_line_up() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    for path in [
        "/v1/clusters/prod/authorities/operators/crl",
        "/v1/clusters/prod/authorities/operators/crl.pem",
        "/v1/clusters/prod/client-ca.pem",
        "/v1/clusters/prod/client-crl.pem?kinds=operators,kubelet",
        "/v1/clusters/prod/revoked.map",
    ] {
        let first = server.client.get(format!("{}{path}", server.url)).send().await.unwrap();
        assert_eq!(first.status(), 200, "{path}");
        let etag = first.headers()["etag"].to_str().unwrap().to_string();
        if path.contains("crl") || path.contains("map") {
            let cache = first.headers()["cache-control"].to_str().unwrap().to_string();
            let max_age: u64 = cache.rsplit('=').next().unwrap().parse().unwrap();
            assert!(max_age <= 60, "{path}: {cache}");
            assert!(first.headers()["last-modified"].to_str().unwrap().ends_with(" GMT"));
        }
        let second = server
            .client
            .get(format!("{}{path}", server.url))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(second.status(), 304, "{path}");
    }

    // client-crl.pem has one CRL per certificate of client-ca.pem, in the same order.
    let (_, _, cas) = server.send(Method::GET, "/v1/clusters/prod/client-ca.pem", None, None).await;
    let (_, _, crls) = server.send(Method::GET, "/v1/clusters/prod/client-crl.pem", None, None).await;
    let cas = pem::parse_many(&cas).unwrap();
    let crls = pem::parse_many(&crls).unwrap();
    assert_eq!(cas.len(), 3);
    assert_eq!(crls.len(), cas.len());
    for (ca, crl) in cas.iter().zip(&crls) {
        use der::Decode;
        let ca = x509_cert::Certificate::from_der(ca.contents()).unwrap();
        let crl = x509_cert::crl::CertificateList::from_der(crl.contents()).unwrap();
        assert_eq!(ca.tbs_certificate.subject, crl.tbs_cert_list.issuer);
    }
    let expected_subjects: Vec<String> =
        ["operators", "control-plane", "kubelet"].iter().map(|k| format!("CN={k} CA 1")).collect();
    for (ca, expected) in cas.iter().zip(&expected_subjects) {
        use der::Decode;
        let subject =
            x509_cert::Certificate::from_der(ca.contents()).unwrap().tbs_certificate.subject.to_string();
        assert!(subject.starts_with(expected.as_str()), "{subject}");
    }
    server.json(Method::GET, "/v1/clusters/prod/client-ca.pem?kinds=bogus", None, None, 400).await;
    server
        .json(Method::GET, "/v1/clusters/prod/authorities/operators/crl?generation=7", None, None, 404)
        .await;
}
