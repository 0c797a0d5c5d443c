//! The conformance story, run on SQLite and on Postgres: clusters and their five CAs.

use der::Decode;
use reqwest::Method;
use serde_json::json;
use x509_cert::Certificate;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier};

use crate::common::*;
use crate::on_both_backends;
use kca::token::Scope;

on_both_backends!(cluster_lifecycle, five_authorities_per_cluster, audit_trail_records_changes);

async fn cluster_lifecycle(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token(&[Scope::Admin]).await;

    let created = server.create_cluster(&admin, "alpha").await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["name"], "alpha");
    assert_eq!(created["server"], "https://k8s.example:6443");
    assert_eq!(created["policy"]["default_ttl_seconds"], 3600);
    assert_eq!(created["authorities"].as_array().unwrap().len(), 5);

    // Location names the new cluster; read by id and by name give the same complete state.
    let (_, headers, _) = server
        .send(
            Method::POST,
            "/v1/clusters",
            Some(&admin),
            Some(json!({"name": "beta", "server": "https://b:6443"})),
        )
        .await;
    let location = headers["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/v1/clusters/"));
    let beta = server.json(Method::GET, &location, Some(&admin), None, 200).await;
    assert_eq!(beta["name"], "beta");
    let by_id = server.json(Method::GET, &format!("/v1/clusters/{id}"), Some(&admin), None, 200).await;
    let by_name = server.json(Method::GET, "/v1/clusters/alpha", Some(&admin), None, 200).await;
    assert_eq!(by_id, by_name);
    assert_eq!(by_id, created, "create answers the same complete state a read does");

    // Duplicate names conflict, and change nothing.
    let problem = server
        .json(
            Method::POST,
            "/v1/clusters",
            Some(&admin),
            Some(json!({"name": "alpha", "server": "https://x:1"})),
            409,
        )
        .await;
    assert!(problem["detail"].as_str().unwrap().contains("alpha"));
    assert_eq!(server.json(Method::GET, "/v1/clusters/alpha", Some(&admin), None, 200).await, created);

    // Pages: three clusters, two per page.
    server.create_cluster(&admin, "gamma").await;
    let first = server.json(Method::GET, "/v1/clusters?limit=2", Some(&admin), None, 200).await;
    let names: Vec<&str> =
        first["items"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = server
        .json(Method::GET, &format!("/v1/clusters?limit=2&cursor={cursor}"), Some(&admin), None, 200)
        .await;
    let names: Vec<&str> =
        second["items"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["gamma"]);
    assert!(second["next_cursor"].is_null());
    server.json(Method::GET, "/v1/clusters?cursor=!!", Some(&admin), None, 400).await;
    server.json(Method::GET, "/v1/clusters?limit=0", Some(&admin), None, 400).await;

    // Patch: server, part of the policy, labels (merge patch); the rest stays.
    let patched = server
        .json(
            Method::PATCH,
            "/v1/clusters/alpha",
            Some(&admin),
            Some(
                json!({"server": "https://new:6443", "policy": {"max_groups": 4}, "labels": {"env": "prod"}}),
            ),
            200,
        )
        .await;
    assert_eq!(patched["server"], "https://new:6443");
    assert_eq!(patched["policy"]["max_groups"], 4);
    assert_eq!(patched["policy"]["max_ttl_seconds"], 86400);
    assert_eq!(patched["labels"], json!({"env": "prod"}));
    assert_ne!(patched["updated_at"], created["updated_at"]);
    let patched = server
        .json(
            Method::PATCH,
            &format!("/v1/clusters/{id}"),
            Some(&admin),
            Some(json!({"labels": {"env": null}})),
            200,
        )
        .await;
    assert_eq!(patched["labels"], json!({}));
    assert_eq!(server.json(Method::GET, "/v1/clusters/alpha", Some(&admin), None, 200).await, patched);
    // Invalid patches are refused and change nothing.
    server
        .json(Method::PATCH, "/v1/clusters/alpha", Some(&admin), Some(json!({"server": "http://plain"})), 422)
        .await;
    server
        .json(
            Method::PATCH,
            "/v1/clusters/alpha",
            Some(&admin),
            Some(json!({"policy": {"max_groups": 1000}})),
            422,
        )
        .await;
    server
        .json(Method::PATCH, "/v1/clusters/alpha", Some(&admin), Some(json!({"name": "renamed"})), 400)
        .await;
    assert_eq!(server.json(Method::GET, "/v1/clusters/alpha", Some(&admin), None, 200).await, patched);

    // Delete, then 404 on every read, and the name is free again.
    server.json(Method::DELETE, "/v1/clusters/alpha", Some(&admin), None, 204).await;
    for path in [
        format!("/v1/clusters/{id}"),
        "/v1/clusters/alpha".to_string(),
        "/v1/clusters/alpha/authorities".to_string(),
        "/v1/clusters/alpha/authorities/operators".to_string(),
        "/v1/clusters/alpha/authorities/operators/ca.pem".to_string(),
    ] {
        server.json(Method::GET, &path, Some(&admin), None, 404).await;
    }
    server.json(Method::DELETE, "/v1/clusters/alpha", Some(&admin), None, 404).await;
    server.json(Method::PATCH, "/v1/clusters/alpha", Some(&admin), Some(json!({})), 404).await;
    let again = server.create_cluster(&admin, "alpha").await;
    assert_ne!(again["id"], created["id"]);

    server.transcript.assert_no_private_key();
}

async fn five_authorities_per_cluster(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    let other = server
        .json(
            Method::POST,
            "/v1/clusters",
            Some(&admin),
            Some(json!({"name": "edge", "server": "https://e:6443", "key_algorithm": "ed25519"})),
            201,
        )
        .await;
    assert_eq!(other["key_algorithm"], "ed25519");

    // Public reads: no token needed.
    let authorities = server.json(Method::GET, "/v1/clusters/prod/authorities", None, None, 200).await;
    let kinds: Vec<&str> =
        authorities.as_array().unwrap().iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["etcd", "control-plane", "operators", "kubelet", "aggregation"]);
    let mut subjects = std::collections::HashSet::new();
    let scratch = tempfile::tempdir().unwrap();
    for authority in authorities.as_array().unwrap() {
        let kind = authority["kind"].as_str().unwrap();
        assert_eq!(authority["generation"], 1);
        let pem = authority["certificate_pem"].as_str().unwrap();
        let cert = parse_certificate(pem);
        let tbs = &cert.tbs_certificate;
        let (critical, constraints) = tbs.get::<BasicConstraints>().unwrap().expect("basicConstraints");
        assert!(critical && constraints.ca, "{kind} is a CA, critically");
        let (_, usage) = tbs.get::<KeyUsage>().unwrap().expect("keyUsage");
        assert!(usage.0.contains(KeyUsages::KeyCertSign) && usage.0.contains(KeyUsages::CRLSign));
        assert!(tbs.get::<SubjectKeyIdentifier>().unwrap().is_some(), "{kind} has an SKI");
        let years = (tbs.validity.not_after.to_unix_duration() - tbs.validity.not_before.to_unix_duration())
            .as_secs()
            / (365 * 86_400);
        assert_eq!(years, 10);
        assert!(subjects.insert(tbs.subject.to_string()), "subjects are unique");
        assert!(authority["subject"].as_str().unwrap().contains(kind));
        assert_eq!(authority["fingerprint_sha256"].as_str().unwrap().len(), 95);

        // The bundle verifies with openssl, and the JSON and PEM views agree.
        let (status, headers, bundle) = server
            .send(Method::GET, &format!("/v1/clusters/prod/authorities/{kind}/ca.pem"), None, None)
            .await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "application/x-pem-file");
        assert_eq!(bundle, pem);
        let file = temp_file(scratch.path(), &format!("{kind}.pem"), bundle.as_bytes());
        let file = file.to_str().unwrap();
        let verified = run_ok("openssl", &["verify", "-CAfile", file, file]);
        assert!(verified.contains(": OK"), "{verified}");

        // ETag and If-None-Match.
        let etag = headers["etag"].to_str().unwrap();
        let response = server
            .client
            .get(format!("{}/v1/clusters/prod/authorities/{kind}/ca.pem", server.url))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 304);

        let one =
            server.json(Method::GET, &format!("/v1/clusters/prod/authorities/{kind}"), None, None, 200).await;
        assert_eq!(&one, authority);
    }

    // Distinct per cluster too.
    let edge = server.json(Method::GET, "/v1/clusters/edge/authorities/operators", None, None, 200).await;
    assert!(!subjects.contains(
        &parse_certificate(edge["certificate_pem"].as_str().unwrap()).tbs_certificate.subject.to_string()
    ));

    // Unknown kinds: 404 listing the valid ones.
    let problem = server.json(Method::GET, "/v1/clusters/prod/authorities/apiserver", None, None, 404).await;
    assert_eq!(
        problem["valid_values"],
        json!(["etcd", "control-plane", "operators", "kubelet", "aggregation"])
    );
    server.json(Method::GET, "/v1/clusters/prod/authorities/apiserver/ca.pem", None, None, 404).await;
    // The DER of a certificate also parses.
    let der = pem::parse(edge["certificate_pem"].as_str().unwrap()).unwrap();
    Certificate::from_der(der.contents()).unwrap();

    server.transcript.assert_no_private_key();
}

async fn audit_trail_records_changes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "audited").await;
    server
        .json(Method::PATCH, "/v1/clusters/audited", Some(&admin), Some(json!({"labels": {"a": "b"}})), 200)
        .await;
    server.json(Method::DELETE, "/v1/clusters/audited", Some(&admin), None, 204).await;
    let audit = server.json(Method::GET, "/v1/audit?limit=2", Some(&admin), None, 200).await;
    let actions: Vec<&str> =
        audit["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["cluster.delete", "cluster.update"]);
    assert_eq!(audit["items"][0]["actor"], "tester");
    assert_eq!(audit["items"][0]["remote_addr"], "127.0.0.1");
    let cursor = audit["next_cursor"].as_str().unwrap();
    let rest = server.json(Method::GET, &format!("/v1/audit?cursor={cursor}"), Some(&admin), None, 200).await;
    assert_eq!(rest["items"][0]["action"], "cluster.create");
    // Only admins read it.
    let reader = server.token(&[Scope::Read]).await;
    server.json(Method::GET, "/v1/audit", Some(&reader), None, 403).await;
}
