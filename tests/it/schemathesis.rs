//! Schemathesis (property-based API testing from the OpenAPI document) against a real kca with a
//! valid token: no server error, and no response that contradicts the document (status codes,
//! content types, bodies).

use reqwest::Method;
use serde_json::json;

use crate::common::*;
use kca::token::Scope;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    // Something to find behind the certificate routes.
    server
        .json(
            Method::POST,
            "/v1/clusters/prod/kubeconfigs",
            Some(&admin),
            Some(json!({"user": "alice"})),
            201,
        )
        .await;
    let reports = tempfile::tempdir().unwrap();
    let seed = std::env::var("KCA_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261125".into());
    let args = vec![
        "run".to_string(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json").to_string(),
        "--url".into(),
        server.url.clone(),
        "--tls-verify".into(),
        server.data_dir.path().join("tls/dev-cert.pem").display().to_string(),
        "--header".into(),
        format!("Authorization: Bearer {admin}"),
        "--checks".into(),
        "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"
            .into(),
        "--max-examples".into(),
        "40".into(),
        "--seed".into(),
        seed,
        // One worker: with two, both threads' first coverage cases have hypothesis parse the same
        // large module (`ast.parse`, to describe a filter's lambda) at once, and CPython 3.11's
        // AST construction is not thread-safe: "SystemError: AST constructor recursion depth
        // mismatch" now and then under load, with schemathesis 4.32.4 and 4.32.5 alike.
        "--workers".into(),
        "1".into(),
        "--max-time".into(),
        "40".into(),
        "--report-dir".into(),
        reports.path().display().to_string(),
        "--no-color".into(),
    ];
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("schemathesis")
            .args(&args)
            .output()
            .expect("schemathesis (tests/run.sh installs it)")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "schemathesis found problems:\n{text}");
    // At least 500 generated requests.
    let generated: u64 = text
        .lines()
        .find_map(|line| line.trim().split_once(" generated").and_then(|(n, _)| n.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no test case count in:\n{text}"));
    assert!(generated >= 500, "only {generated} test cases:\n{text}");
    println!("schemathesis: {generated} test cases, no failures");
}
