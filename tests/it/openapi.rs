//! `openapi/openapi.json` is generated from the code; this fails, with a readable diff, when the
//! committed file is stale. Regenerate with `cargo run -- openapi > openapi/openapi.json`.

#[test]
fn the_committed_openapi_document_is_current() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
        .expect("openapi/openapi.json exists");
    let generated = kca::http::openapi_json();
    if committed == generated {
        return;
    }
    let committed_lines: Vec<&str> = committed.lines().collect();
    let generated_lines: Vec<&str> = generated.lines().collect();
    let first = committed_lines
        .iter()
        .zip(&generated_lines)
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| committed_lines.len().min(generated_lines.len()));
    let from = first.saturating_sub(3);
    let mut diff = String::new();
    for line in committed_lines.iter().skip(from).take(8) {
        diff.push_str(&format!("- {line}\n"));
    }
    for line in generated_lines.iter().skip(from).take(8) {
        diff.push_str(&format!("+ {line}\n"));
    }
    panic!(
        "openapi/openapi.json is stale (first difference at line {}):\n{diff}\n\
         regenerate it with: cargo run -- openapi > openapi/openapi.json",
        first + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_the_same_document() {
    let server = crate::common::TestServer::start(crate::common::Backend::Sqlite).await;
    let served: serde_json::Value =
        server.client.get(format!("{}/openapi.json", server.url)).send().await.unwrap().json().await.unwrap();
    let generated: serde_json::Value = serde_json::from_str(&kca::http::openapi_json()).unwrap();
    assert_eq!(served, generated);
}
