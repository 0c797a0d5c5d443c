//! Tokens: every way a request can be unauthenticated (401) or not allowed (403).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use serde_json::json;

use crate::common::*;
use crate::on_both_backends;
use kca::token::{Scope, TokenRequest, TokenService};

on_both_backends!(authentication_and_authorization);

fn forge_unsigned(claims: serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string());
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{body}.")
}

async fn authentication_and_authorization(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    server.create_cluster(&admin, "dev").await;
    let create = json!({"name": "new", "server": "https://n:6443"});
    let now = time::OffsetDateTime::now_utc();

    // 401: missing, malformed, badly signed, expired, wrong audience, wrong issuer, alg none.
    let (status, headers, _) = server.send(Method::POST, "/v1/clusters", None, Some(create.clone())).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"kca\"");
    let claims = json!({
        "sub": "mallory", "iss": "kca", "aud": "kca", "iat": now.unix_timestamp(),
        "exp": now.unix_timestamp() + 3600, "jti": "x", "scopes": ["admin"], "clusters": ["*"]
    });
    let mut tampered = admin.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let lifetime = std::time::Duration::from_secs(90 * 86_400);
    let master = server.app.keyring.master();
    let wrong_audience =
        TokenService::load(server.app.store.as_ref(), master, "kca", "someone-else", lifetime).await.unwrap();
    let wrong_issuer =
        TokenService::load(server.app.store.as_ref(), master, "other", "kca", lifetime).await.unwrap();
    let request = |ttl: time::Duration| TokenRequest {
        subject: "tester".into(),
        scopes: vec![Scope::Admin],
        clusters: vec!["*".into()],
        groups: None,
        max_ttl: None,
        ttl,
        person: None,
    };
    let mint = |service: &TokenService, ttl, at| service.mint(&request(ttl), "t", at).unwrap().0;
    let hour = time::Duration::hours(1);
    let expired = mint(&server.app.tokens, hour, now - time::Duration::hours(2));
    let other_audience = mint(&wrong_audience, hour, now);
    let other_issuer = mint(&wrong_issuer, hour, now);
    let cases = [
        ("garbage", "not-a-jwt".to_string()),
        ("tampered signature", tampered),
        ("expired", expired),
        ("wrong audience", other_audience),
        ("wrong issuer", other_issuer),
        ("alg none", forge_unsigned(claims)),
    ];
    for (case, token) in cases {
        let problem =
            server.json(Method::POST, "/v1/clusters", Some(&token), Some(create.clone()), 401).await;
        assert_eq!(problem["status"], 401, "{case}");
        // A bad token is refused even where no token is needed.
        server.json(Method::GET, "/v1/clusters/prod/authorities", Some(&token), None, 401).await;
    }
    let (status, _, _) = server
        .client
        .get(format!("{}/v1/clusters", server.url))
        .header("authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l")
        .send()
        .await
        .map(|r| (r.status(), (), ()))
        .unwrap();
    assert_eq!(status, 401);

    // 403: valid token without the scope, or for another cluster.
    let reader = server.token(&[Scope::Read]).await;
    server.json(Method::POST, "/v1/clusters", Some(&reader), Some(create.clone()), 403).await;
    server.json(Method::DELETE, "/v1/clusters/prod", Some(&reader), None, 403).await;
    server.json(Method::PATCH, "/v1/clusters/prod", Some(&reader), Some(json!({})), 403).await;
    let dev_writer = server.token_for(&[Scope::ClustersWrite, Scope::Read], &["dev"]).await;
    server.json(Method::DELETE, "/v1/clusters/prod", Some(&dev_writer), None, 403).await;
    server.json(Method::GET, "/v1/clusters/prod", Some(&dev_writer), None, 403).await;
    server.json(Method::POST, "/v1/clusters", Some(&dev_writer), Some(create.clone()), 403).await;
    server.json(Method::GET, "/v1/clusters/dev", Some(&dev_writer), None, 200).await;
    // A cluster-limited token lists only its clusters.
    let listed = server.json(Method::GET, "/v1/clusters", Some(&dev_writer), None, 200).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["name"], "dev");
    // Nothing above changed anything.
    let all = server.json(Method::GET, "/v1/clusters", Some(&admin), None, 200).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_reads_can_be_turned_off() {
    let server = TestServer::start_with(Backend::Sqlite, |args| args.public_read = false).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "closed").await;
    server.create_cluster(&admin, "other").await;
    server.json(Method::GET, "/v1/clusters/closed/authorities", None, None, 401).await;
    let (status, _, _) =
        server.send(Method::GET, "/v1/clusters/closed/authorities/etcd/ca.pem", None, None).await;
    assert_eq!(status, 401);
    let other_reader = server.token_for(&[Scope::Read], &["other"]).await;
    server.json(Method::GET, "/v1/clusters/closed/authorities", Some(&other_reader), None, 403).await;
    let reader = server.token_for(&[Scope::Read], &["closed"]).await;
    server.json(Method::GET, "/v1/clusters/closed/authorities", Some(&reader), None, 200).await;
}

#[test]
fn token_create_prints_a_token_the_server_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let token = run_ok(
        env!("CARGO_BIN_EXE_kca"),
        &["token", "create", "--data-dir", data_dir, "--subject", "ops", "--scope", "read", "--ttl", "2h"],
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let args = serve_args(dir.path(), None);
        let (store, _, tokens) = kca::app::open_store_and_keys(&args.store).await.unwrap();
        let claims = tokens.verify(token.trim(), time::OffsetDateTime::now_utc()).unwrap();
        assert_eq!(claims.sub, "ops");
        assert_eq!(claims.scopes, vec![Scope::Read]);
        assert_eq!(claims.clusters, vec!["*".to_string()]);
        assert!(claims.exp - claims.iat == 7200);
        // Registered, so that it can be listed and revoked.
        let record = store.get_token(claims.jti.parse().unwrap()).await.unwrap();
        assert_eq!(record.subject, "ops");
        assert!(record.created_by.starts_with("host:"));
    });
    // A cluster that does not exist cannot be named; nor a lifetime beyond the maximum.
    for (flag, value, message) in [("--cluster", "nope", "no cluster"), ("--ttl", "100d", "lifetime")] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_kca"))
            .args([
                "token",
                "create",
                "--data-dir",
                data_dir,
                "--subject",
                "x",
                "--scope",
                "read",
                flag,
                value,
            ])
            .output()
            .unwrap();
        assert!(!output.status.success());
        assert!(String::from_utf8_lossy(&output.stderr).contains(message), "{flag} {value}");
    }
    // An unknown scope is refused with the list of valid ones.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kca"))
        .args(["token", "create", "--data-dir", data_dir, "--subject", "x", "--scope", "root"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("kubeconfigs:issue"));
}

/// `serve` and `token create` often start together on a fresh data directory; they must end up on
/// one database and one development master key, with none failing on the other's half-made tables.
#[test]
fn processes_setting_up_one_fresh_data_directory_together_agree() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let children: Vec<_> = (0..4)
            .map(|i| {
                std::process::Command::new(env!("CARGO_BIN_EXE_kca"))
                    .args(["token", "create", "--scope", "read", "--subject", &format!("p{i}"), "--data-dir"])
                    .arg(dir.path())
                    .env_remove("KCA_MASTER_KEY")
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let tokens: Vec<String> = children
            .into_iter()
            .map(|child| {
                let output = child.wait_with_output().unwrap();
                let stderr = String::from_utf8_lossy(&output.stderr);
                assert!(output.status.success(), "a concurrent setup failed: {stderr}");
                String::from_utf8(output.stdout).unwrap().trim().to_string()
            })
            .collect();
        runtime.block_on(async {
            let (_, _, service) =
                kca::app::open_store_and_keys(&serve_args(dir.path(), None).store).await.unwrap();
            for (i, token) in tokens.iter().enumerate() {
                let claims = service.verify(token, time::OffsetDateTime::now_utc()).unwrap();
                assert_eq!(claims.sub, format!("p{i}"));
            }
        });
    }
}
