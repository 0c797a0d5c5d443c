//! Operations: Prometheus metrics, rate limits, response headers, and logs that never carry a
//! secret.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;
use crate::revocation::issue_user;
use kca::token::Scope;

/// Parse Prometheus text with the reference parser (pip `prometheus-client`); answers
/// `{family: {"type", "samples": [[name, labels, value]]}}`.
fn parse_prometheus(text: &str) -> Value {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    out[family.name] = {"type": family.type, "samples": [[s.name, s.labels, s.value] for s in family.samples]}
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "not valid Prometheus text: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn sample(families: &Value, family: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families[family]["samples"]
        .as_array()?
        .iter()
        .find(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][*k] == *v))
        .and_then(|s| s[2].as_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    let alice = issue_user(&server, &admin, "prod", "alice", &[]).await;
    issue_user(&server, &admin, "prod", "bob", &[]).await;
    let path = format!("/v1/clusters/prod/certificates/{}/revoke", alice["serial"].as_str().unwrap());
    server.json(Method::POST, &path, Some(&admin), None, 200).await;
    server.json(Method::GET, "/v1/clusters/nope", Some(&admin), None, 404).await;

    let (status, headers, text) = server.send(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let families = parse_prometheus(&text);
    let issued = ("cluster", "prod");
    assert_eq!(
        sample(
            &families,
            "kca_certificates_issued",
            "kca_certificates_issued_total",
            &[issued, ("authority", "operators"), ("profile", "user")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &families,
            "kca_certificates_revoked",
            "kca_certificates_revoked_total",
            &[issued, ("authority", "operators")]
        ),
        Some(1.0)
    );
    let route = ("route", "/v1/clusters/{cluster}/kubeconfigs");
    assert_eq!(
        sample(
            &families,
            "kca_http_requests",
            "kca_http_requests_total",
            &[route, ("status", "201"), ("method", "POST")]
        ),
        Some(2.0)
    );
    assert!(
        sample(
            &families,
            "kca_http_requests",
            "kca_http_requests_total",
            &[("route", "/v1/clusters/{cluster}"), ("status", "404")]
        )
        .is_some()
    );
    assert_eq!(families["kca_http_request_duration_seconds"]["type"], "histogram");
    assert_eq!(
        sample(
            &families,
            "kca_http_request_duration_seconds",
            "kca_http_request_duration_seconds_count",
            &[route]
        ),
        Some(2.0)
    );
    let crl_labels = [issued, ("authority", "operators"), ("generation", "1")];
    let published = server
        .app
        .published
        .crl(
            server
                .app
                .snapshot(issued.1)
                .await
                .unwrap()
                .signer(kca::pki::AuthorityKind::Operators)
                .unwrap()
                .id,
        )
        .unwrap();
    assert_eq!(
        sample(&families, "kca_crl_number", "kca_crl_number", &crl_labels),
        Some(published.record.number as f64)
    );
    let age = sample(&families, "kca_crl_age_seconds", "kca_crl_age_seconds", &crl_labels).unwrap();
    assert!((300.0..400.0).contains(&age), "thisUpdate is backdated five minutes: {age}");
    assert!(
        sample(
            &families,
            "kca_crl_next_update_timestamp_seconds",
            "kca_crl_next_update_timestamp_seconds",
            &crl_labels
        )
        .is_some()
    );
    assert!(
        sample(
            &families,
            "kca_authority_not_after_timestamp_seconds",
            "kca_authority_not_after_timestamp_seconds",
            &crl_labels
        )
        .is_some()
    );
    assert!(
        sample(&families, "kca_db_pool_connections", "kca_db_pool_connections", &[("state", "idle")])
            .is_some()
    );
    assert_eq!(sample(&families, "kca_build_info", "kca_build_info", &[("backend", "sqlite")]), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuance_is_rate_limited_per_token() {
    let server = TestServer::start_with(Backend::Sqlite, |args| args.issue_rate_limit = 3).await;
    let admin = server.token(&[Scope::Admin]).await;
    let other = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    for _ in 0..3 {
        issue_user(&server, &admin, "prod", "alice", &[]).await;
    }
    let (status, headers, body) = server
        .send(Method::POST, "/v1/clusters/prod/kubeconfigs", Some(&admin), Some(json!({"user": "alice"})))
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    // Another token is not held back, and the refused request recorded nothing.
    issue_user(&server, &other, "prod", "bob", &[]).await;
    let listed = server.json(Method::GET, "/v1/clusters/prod/certificates", Some(&admin), None, 200).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_security_headers_and_cors_is_off_by_default() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    let response = server
        .client
        .get(format!("{}/v1/clusters/prod", server.url))
        .bearer_auth(&admin)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    let headers = response.headers();
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers["strict-transport-security"].to_str().unwrap().starts_with("max-age="));
    assert!(!headers.contains_key("access-control-allow-origin"));
    // A preflight from another origin gets no CORS grant either.
    let preflight = server
        .client
        .request(Method::OPTIONS, format!("{}/v1/clusters", server.url))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(!preflight.headers().contains_key("access-control-allow-origin"));
    // Responses that hand out a key are never cached.
    let (_, headers, _) = server
        .send(Method::POST, "/v1/clusters/prod/kubeconfigs", Some(&admin), Some(json!({"user": "a"})))
        .await;
    assert_eq!(headers["cache-control"], "no-store");

    // Configured origins are allowed, and only those.
    let open =
        TestServer::start_with(Backend::Sqlite, |args| args.cors_origins = vec!["https://ui.example".into()])
            .await;
    let preflight = open
        .client
        .request(Method::OPTIONS, format!("{}/v1/clusters", open.url))
        .header("origin", "https://ui.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.headers()["access-control-allow-origin"], "https://ui.example");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_a_full_run_carry_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).unwrap();
    use base64::Engine;
    let master_key = base64::engine::general_purpose::STANDARD.encode(key);
    let port = free_port();
    let log_path = dir.path().join("kca.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kca"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .env("KCA_MASTER_KEY", &master_key)
        .env("KCA_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::from(std::fs::File::create(dir.path().join("stdout.log")).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
        .spawn()
        .unwrap();
    let token = {
        let output = Command::new(env!("CARGO_BIN_EXE_kca"))
            .args(["token", "create", "--subject", "ops", "--scope", "admin", "--data-dir"])
            .arg(dir.path())
            .env("KCA_MASTER_KEY", &master_key)
            .output()
            .unwrap();
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    let client = {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dir.path().join("tls/dev-cert.pem").exists() {
            assert!(Instant::now() < deadline, "kca did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        client_trusting(&dir.path().join("tls/dev-cert.pem"))
    };
    let url = format!("https://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{url}/readyz")).send().await.map(|r| r.status() != 200).unwrap_or(true) {
        assert!(Instant::now() < deadline, "kca did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let post =
        |path: &str, body: Value| client.post(format!("{url}{path}")).bearer_auth(&token).json(&body).send();
    let mut secrets = vec![token.clone(), master_key.clone()];
    assert_eq!(
        post(
            "/v1/clusters",
            json!({"name": "prod", "server": "https://k:6443", "policy": component_policy()})
        )
        .await
        .unwrap()
        .status(),
        201
    );
    let issued: Value = post("/v1/clusters/prod/kubeconfigs", json!({"user": "alice", "groups": ["dev"]}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let component: Value =
        post("/v1/clusters/prod/certificates", json!({"profile": "etcd-peer", "dns_names": ["e0"]}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    for key_pem in [&issued["private_key_pem"], &component["private_key_pem"]] {
        // A line from the middle of each key's base64.
        secrets.push(key_pem.as_str().unwrap().lines().nth(1).unwrap().to_string());
    }
    let serial = issued["serial"].as_str().unwrap();
    post(&format!("/v1/clusters/prod/certificates/{serial}/revoke"), json!({})).await.unwrap();
    post("/v1/clusters/prod/authorities/operators/rotate", json!({})).await.unwrap();
    post("/v1/clusters/prod/authorities/operators/generations/1/retire", json!({"force": true}))
        .await
        .unwrap();
    // Imported keys: a CA (and a refused one), a service-account key, and its export.
    let identity = kca::pki::ca::AuthorityIdentity {
        cluster_name: "elsewhere",
        cluster_id: "00000000-0000-4000-8000-000000000000",
        kind: kca::pki::AuthorityKind::ControlPlane,
        generation: 1,
    };
    let made = kca::pki::ca::create_authority(
        &identity,
        kca::pki::KeyAlgorithm::P256,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let ca_pem = kca::pki::to_pem("CERTIFICATE", &made.certificate_der);
    let ca_key = kca::pki::to_pem("PRIVATE KEY", &made.pkcs8);
    let (_, other_key) = kca::pki::SigningKeyPair::generate(kca::pki::KeyAlgorithm::P256).unwrap();
    let other_key = kca::pki::to_pem("PRIVATE KEY", &other_key);
    let (_, sa_key) = kca::pki::SigningKeyPair::generate(kca::pki::KeyAlgorithm::P256).unwrap();
    let sa_key = kca::pki::to_pem("PRIVATE KEY", &sa_key);
    for pem in [&ca_key, &other_key, &sa_key] {
        secrets.push(pem.lines().nth(1).unwrap().to_string());
    }
    let import = "/v1/clusters/prod/authorities/control-plane/import";
    let refused =
        post(import, json!({"certificate_pem": ca_pem, "private_key_pem": other_key})).await.unwrap();
    assert_eq!(refused.status(), 422);
    let imported = post(import, json!({"certificate_pem": ca_pem, "private_key_pem": ca_key})).await.unwrap();
    assert_eq!(imported.status(), 200);
    let misplaced = post(
        "/v1/clusters",
        json!({"name": "x", "server": "https://k:6443", "authorities": {"etcd": ca_key}}),
    );
    assert!(misplaced.await.unwrap().status().is_client_error());
    let sa = post("/v1/clusters/prod/service-account/keys/import", json!({"private_key_pem": sa_key}))
        .await
        .unwrap();
    assert_eq!(sa.status(), 201);
    let exported: Value = post("/v1/clusters/prod/service-account/signing-key/export", json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(exported["private_key_pem"].as_str().unwrap().contains("PRIVATE KEY"));
    // Failures are logged too: a bad token, a bad CSR.
    client.get(format!("{url}/v1/clusters")).bearer_auth(format!("{token}x")).send().await.unwrap();
    post("/v1/clusters/prod/kubeconfigs", json!({"user": "x", "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"})).await.unwrap();
    // Stop gracefully and read everything it logged.
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "kca exits cleanly on SIGTERM");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.lines().count() > 20, "the run was logged");
    for line in log.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }
    assert!(log.contains("kubeconfig issued") && log.contains("certificate revoked"));
    assert!(!log.contains("PRIVATE KEY"));
    assert!(!log.contains("eyJ"), "something JWT-shaped was logged");
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a secret was logged");
    }
}

/// Logs going to a pipe or a file carry no ANSI colour codes, even without `NO_COLOR`.
#[test]
fn logs_into_a_pipe_carry_no_colour_codes() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kca"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("NO_COLOR")
        .env_remove("KCA_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut logged = Vec::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let listening = line.contains("kca listening");
        logged.push(line);
        if listening {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let text = logged.join("\n");
    assert!(text.contains("kca listening"), "kca did not log that it listens:\n{text}");
    assert!(text.contains("WARN") && text.contains("INFO"), "levels are still written:\n{text}");
    assert!(!text.contains('\u{1b}'), "ANSI escape codes in a piped log:\n{text:?}");
}
