//! Error answers reach the system `curl` (7.88, Debian 12's) intact, over HTTP/2 and HTTP/1.1,
//! however early the server refuses a request whose body it has not read.

use std::path::Path;

use reqwest::Method;
use serde_json::json;

use crate::common::*;
use kca::token::Scope;

/// One `curl` POST: its exit status, the status it reported and the body it printed.
struct Outcome {
    exit: i32,
    status: String,
    body: String,
    stderr: String,
}

/// With `chunked`, the body's length is not declared (chunked framing over HTTP/1.1; over HTTP/2
/// curl then sends no content-length): the server finds out it is too large only by reading it.
async fn curl_post(
    version: &str,
    cert: &Path,
    url: &str,
    token: Option<&str>,
    body: &Path,
    chunked: bool,
) -> Outcome {
    let mut command = tokio::process::Command::new("curl");
    command.args([version, "-sS", "--max-time", "30", "--cacert"]).arg(cert);
    if chunked {
        command.args(["-H", "Transfer-Encoding: chunked"]);
    }
    command.args(["-w", "\n%{http_code}", "-H", "Content-Type: application/json", "--data-binary"]);
    command.arg(format!("@{}", body.display()));
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let output = command.arg(url).output().await.expect("curl runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    Outcome {
        exit: output.status.code().unwrap_or(-1),
        status: status.to_string(),
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_every_early_error_intact() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    let cert = server.data_dir.path().join("tls/dev-cert.pem");
    let files = tempfile::tempdir().unwrap();
    let small = temp_file(files.path(), "small.json", br#"{"name":"c","server":"https://k:6443"}"#);
    let large = temp_file(files.path(), "large.json", &vec![b'a'; 100 * 1024]);
    let huge = temp_file(files.path(), "huge.json", &vec![b'a'; 3 * 1024 * 1024]);
    let url = format!("{}/v1/clusters", server.url);

    let cases: [(&str, Option<&str>, &Path, bool, u16); 6] = [
        ("bad token, small body", Some("not-a-token"), &small, false, 401),
        ("no token, 3 MiB body", None, &huge, false, 413),
        ("bad token, 3 MiB body", Some("not-a-token"), &huge, false, 413),
        ("admin token, 100 KiB body", Some(&admin), &large, false, 413),
        ("bad token, 3 MiB chunked body", Some("not-a-token"), &huge, true, 413),
        ("admin token, 100 KiB chunked body", Some(&admin), &large, true, 413),
    ];
    let mut failures = Vec::new();
    for version in ["--http2", "--http1.1"] {
        for round in 0..10 {
            for (name, token, body, chunked, expect) in &cases {
                let outcome = curl_post(version, &cert, &url, *token, body, *chunked).await;
                let intact = outcome.exit == 0
                    && outcome.status == expect.to_string()
                    && outcome.body.contains(&format!("\"status\":{expect}"))
                    && outcome.body.contains("urn:kca:problem:");
                if !intact {
                    failures.push(format!(
                        "{version} round {round}, {name}: exit {}, status {}, body {:?}, stderr {:?}",
                        outcome.exit,
                        outcome.status,
                        outcome.body,
                        outcome.stderr.trim()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 120 answers did not reach curl intact:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The connection handling of errors leaves successes alone.
    for (version, name) in [("--http2", "h2"), ("--http1.1", "h1")] {
        let body = temp_file(
            files.path(),
            "ok.json",
            json!({"name": name, "server": "https://k:6443"}).to_string().as_bytes(),
        );
        let outcome = curl_post(version, &cert, &url, Some(&admin), &body, false).await;
        assert_eq!((outcome.exit, outcome.status.as_str()), (0, "201"), "{version}: {}", outcome.stderr);
    }
    let clusters = server.json(Method::GET, "/v1/clusters", Some(&admin), None, 200).await;
    assert_eq!(
        clusters["items"].as_array().unwrap().len(),
        2,
        "only the two valid requests created a cluster"
    );
}
