//! Regression tests for the security findings of the authorization review: each failed before
//! its fix.

use reqwest::Method;
use serde_json::json;

use crate::common::*;
use kca::token::Scope;

/// Invented HTTP methods must not become label values: `/metrics` stays small and lists none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_methods_do_not_grow_the_metrics() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    let (_, _, baseline) = server.send(Method::GET, "/metrics", None, None).await;

    let filler = "X".repeat(2000);
    for i in 0..50 {
        let method = Method::from_bytes(format!("INVENTED{filler}{i}").as_bytes()).unwrap();
        let path = if i % 2 == 0 { "/healthz" } else { "/no/such/path" };
        let response = server.client.request(method, format!("{}{path}", server.url)).send().await.unwrap();
        assert!(response.status().is_client_error(), "{path}: {}", response.status());
    }

    let (status, _, text) = server.send(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, 200);
    assert!(
        text.len() < baseline.len() + 16 * 1024,
        "/metrics grew from {} to {} bytes after 50 requests with invented methods",
        baseline.len(),
        text.len()
    );
    assert!(!text.contains("INVENTED"), "/metrics lists an invented method");
    assert!(text.contains("method=\"other\""), "invented methods are counted as other:\n{text}");
}

/// With public reads off, `/metrics` (which names every cluster) needs a `read` token valid for
/// every cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_read_token_when_public_reads_are_off() {
    let server = TestServer::start_with(Backend::Sqlite, |args| args.public_read = false).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "secret-prod").await;

    let (status, headers, text) = server.send(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, 401, "unauthenticated /metrics with public reads off: {text}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(!text.contains("secret-prod"), "{text}");

    let issuer = server.token(&[Scope::KubeconfigsIssue]).await;
    let (status, _, text) = server.send(Method::GET, "/metrics", Some(&issuer), None).await;
    assert_eq!(status, 403, "a token without the read scope: {text}");

    // The metrics name every cluster: a token limited to some clusters does not see them.
    let limited = server.token_for(&[Scope::Read], &["other"]).await;
    let (status, _, text) = server.send(Method::GET, "/metrics", Some(&limited), None).await;
    assert_eq!(status, 403, "a read token limited to other clusters: {text}");
    assert!(!text.contains("secret-prod"), "{text}");

    let reader = server.token(&[Scope::Read]).await;
    let (status, _, text) = server.send(Method::GET, "/metrics", Some(&reader), None).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("cluster=\"secret-prod\""), "{text}");
}

/// The YAML download's file name cannot carry a second parameter, quotes, or raw non-ASCII.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_download_file_name_cannot_inject_parameters() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;

    for (user, fallback, encoded) in [
        (
            "x\"; filename=\"evil.sh",
            "kubeconfig-prod-x___filename__evil.sh.yaml",
            "kubeconfig-prod-x%22%3B%20filename%3D%22evil.sh.yaml",
        ),
        ("a\\b;c", "kubeconfig-prod-a_b_c.yaml", "kubeconfig-prod-a%5Cb%3Bc.yaml"),
        ("José Ñ", "kubeconfig-prod-Jos___.yaml", "kubeconfig-prod-Jos%C3%A9%20%C3%91.yaml"),
        ("alice", "kubeconfig-prod-alice.yaml", "kubeconfig-prod-alice.yaml"),
    ] {
        let response = server
            .client
            .post(format!("{}/v1/clusters/prod/kubeconfigs", server.url))
            .bearer_auth(&admin)
            .header("accept", "application/yaml")
            .json(&json!({"user": user}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{user}");
        let disposition = response
            .headers()
            .get("content-disposition")
            .unwrap_or_else(|| panic!("{user}: no Content-Disposition"))
            .as_bytes()
            .to_vec();
        let disposition = String::from_utf8(disposition).unwrap();
        assert!(disposition.is_ascii(), "{user}: {disposition}");
        assert_eq!(
            disposition.matches("filename=").count(),
            1,
            "{user}: one filename parameter expected in {disposition}"
        );
        assert_eq!(
            disposition,
            format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"),
            "{user}"
        );
    }
}

/// A server URL with a control character or a line separator anywhere is refused, on create and
/// on update; what is stored is the parsed URL's normal form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_urls_with_control_characters_are_refused() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;

    for bad in [
        "https://k8s.example:6443\n",
        "https://k8s.example:6443\u{2028}",
        "https://k8s.example:6443/\u{2028}",
        "https://k8s.example:6443/\u{2029}x",
        "\thttps://k8s.example:6443",
        " https://k8s.example:6443",
        "https://k8s.example:6443/a\u{0}b",
        "https://k8s.example:6443/a\u{85}b",
        "https://k8s.example:6443\r",
    ] {
        let body = json!({"name": "other", "server": bad});
        let (status, _, text) = server.send(Method::POST, "/v1/clusters", Some(&admin), Some(body)).await;
        assert_eq!(status, 422, "create with server {bad:?}: {text}");
        let problem: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(problem["field"], "server", "{bad:?}");

        let patch = json!({"server": bad});
        let (status, _, text) =
            server.send(Method::PATCH, "/v1/clusters/prod", Some(&admin), Some(patch)).await;
        assert_eq!(status, 422, "update with server {bad:?}: {text}");
    }
    let prod = server.json(Method::GET, "/v1/clusters/prod", Some(&admin), None, 200).await;
    assert_eq!(prod["server"], "https://k8s.example:6443");

    // Stored in normal form: host lowercased, default port dropped, no root slash added.
    let created = server
        .json(
            Method::POST,
            "/v1/clusters",
            Some(&admin),
            Some(json!({"name": "upper", "server": "https://K8S.Example:443"})),
            201,
        )
        .await;
    assert_eq!(created["server"], "https://k8s.example");
    let patched = server
        .json(
            Method::PATCH,
            "/v1/clusters/upper",
            Some(&admin),
            Some(json!({"server": "https://K8S.Example:6443/Proxy/"})),
            200,
        )
        .await;
    assert_eq!(patched["server"], "https://k8s.example:6443/Proxy/");
}

/// An RSA key pair and a CSR for it, made by openssl in `dir`.
fn openssl_rsa_csr(dir: &std::path::Path, name: &str, keygen: &[&str]) -> String {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let mut args = keygen.to_vec();
    args.extend(["-out", key.to_str().unwrap()]);
    run_ok("openssl", &args);
    run_ok(
        "openssl",
        &[
            "req",
            "-new",
            "-sha256",
            "-key",
            key.to_str().unwrap(),
            "-subj",
            "/CN=mallory",
            "-out",
            csr.to_str().unwrap(),
        ],
    );
    std::fs::read_to_string(csr).unwrap()
}

/// RSA CSR keys need e = 65537 and 2048 to 8192 bits, and the refusal says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_rsa_keys_in_csrs_are_refused_with_the_reason() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    let scratch = tempfile::tempdir().unwrap();
    let rsa = |bits: &'static str, exponent: &'static str| {
        let bits = format!("rsa_keygen_bits:{bits}");
        let exponent = format!("rsa_keygen_pubexp:{exponent}");
        let name = format!("{bits}-{exponent}").replace(':', "_");
        openssl_rsa_csr(
            scratch.path(),
            &name,
            &["genpkey", "-algorithm", "RSA", "-pkeyopt", &bits, "-pkeyopt", &exponent],
        )
    };
    let issue = |csr: String| {
        server.send(
            Method::POST,
            "/v1/clusters/prod/kubeconfigs",
            Some(&admin),
            Some(json!({"user": "alice", "csr_pem": csr})),
        )
    };

    let (status, _, text) = issue(rsa("2048", "65537")).await;
    assert_eq!(status, 201, "RSA-2048, e = 65537: {text}");

    for (bits, exponent, expected) in
        [("2048", "3", "65537"), ("2048", "17", "65537"), ("1024", "65537", "2048 bits")]
    {
        let (status, _, text) = issue(rsa(bits, exponent)).await;
        assert_eq!(status, 422, "RSA-{bits}, e = {exponent}: {text}");
        let problem: serde_json::Value = serde_json::from_str(&text).unwrap();
        let detail = problem["detail"].as_str().unwrap();
        assert_eq!(problem["field"], "csr_pem");
        assert!(
            detail.contains(expected),
            "RSA-{bits}, e = {exponent}: {detail:?} should mention {expected}"
        );
        assert!(!detail.contains("does not verify"), "RSA-{bits}, e = {exponent}: {detail:?}");
    }
}

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// `kca.db` (sealed keys, the token log) and its WAL and shared-memory files are 0600 like
/// `master.key`, new or found group- or world-readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_files_are_private() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    server
        .json(Method::POST, "/v1/clusters/prod/kubeconfigs", Some(&admin), Some(json!({"user": "a"})), 201)
        .await;
    let dir = server.data_dir.path().to_path_buf();
    assert_eq!(mode_of(&dir.join("master.key")), 0o600, "master.key");
    for name in ["kca.db", "kca.db-wal", "kca.db-shm"] {
        assert_eq!(
            mode_of(&dir.join(name)),
            0o600,
            "{name} of a new database: {:o}",
            mode_of(&dir.join(name))
        );
    }

    // A database an older kca left readable to all is made private when it is opened.
    let (data_dir, database) = server.stop().await;
    let dir = data_dir.path().to_path_buf();
    for name in ["kca.db", "kca.db-wal", "kca.db-shm"] {
        let path = dir.join(name);
        if path.exists() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let server = TestServer::resume(data_dir, database).await;
    server
        .json(Method::POST, "/v1/clusters/prod/kubeconfigs", Some(&admin), Some(json!({"user": "b"})), 201)
        .await;
    for name in ["kca.db", "kca.db-wal", "kca.db-shm"] {
        assert_eq!(
            mode_of(&dir.join(name)),
            0o600,
            "{name} of a reopened database: {:o}",
            mode_of(&dir.join(name))
        );
    }
}
