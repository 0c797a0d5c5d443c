//! pkilint (RFC 5280 linters) on what kca signs: CA certificates, user certificates, CRLs with and
//! without entries, for each key algorithm.

use reqwest::Method;
use serde_json::json;

use crate::common::*;
use crate::revocation::issue_user;
use kca::token::Scope;

/// Lint a document; answers the findings at WARNING and above (empty when clean).
pub fn pkilint(program: &str, args: &[&str], document: &str, dir: &std::path::Path) -> String {
    let file = temp_file(dir, "document.pem", document.as_bytes());
    let mut all: Vec<&str> = vec!["lint"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-s", "WARNING", file.to_str().unwrap()]);
    let output = std::process::Command::new(program)
        .args(&all)
        .output()
        .unwrap_or_else(|e| panic!("{program} (pip install pkilint): {e}"));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_crls_pass_pkilint() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    let dir = tempfile::tempdir().unwrap();
    for (cluster, algorithm) in [("p256", "p256"), ("p384", "p384"), ("ed25519", "ed25519")] {
        server
            .json(
                Method::POST,
                "/v1/clusters",
                Some(&admin),
                Some(json!({"name": cluster, "server": "https://k:6443", "key_algorithm": algorithm})),
                201,
            )
            .await;
        let (_, _, empty_crl) = server
            .send(Method::GET, &format!("/v1/clusters/{cluster}/authorities/operators/crl.pem"), None, None)
            .await;
        let user = issue_user(&server, &admin, cluster, "alice", &["dev", "ops"]).await;
        let other = issue_user(&server, &admin, cluster, "bob", &[]).await;
        for (serial, reason) in
            [(&user["serial"], json!({"reason": "keyCompromise"})), (&other["serial"], json!({}))]
        {
            let path = format!("/v1/clusters/{cluster}/certificates/{}/revoke", serial.as_str().unwrap());
            server.json(Method::POST, &path, Some(&admin), Some(reason), 200).await;
        }
        let (_, _, full_crl) = server
            .send(Method::GET, &format!("/v1/clusters/{cluster}/authorities/operators/crl.pem"), None, None)
            .await;
        assert_eq!(
            pkilint("lint_crl", &["-t", "CRL", "-p", "PKIX"], &empty_crl, dir.path()),
            "",
            "{cluster}: empty CRL"
        );
        assert_eq!(
            pkilint("lint_crl", &["-t", "CRL", "-p", "PKIX"], &full_crl, dir.path()),
            "",
            "{cluster}: CRL"
        );
        let ca =
            server.json(Method::GET, &format!("/v1/clusters/{cluster}/authorities"), None, None, 200).await;
        for authority in ca.as_array().unwrap() {
            let findings =
                pkilint("lint_pkix_cert", &[], authority["certificate_pem"].as_str().unwrap(), dir.path());
            assert_eq!(findings, "", "{cluster}: {} CA", authority["kind"]);
        }
        let findings = pkilint("lint_pkix_cert", &[], user["certificate_pem"].as_str().unwrap(), dir.path());
        assert_eq!(findings, "", "{cluster}: user certificate");
    }
}
