//! Clusters carry their version as an ETag: a change made with `If-Match` of a stale version is
//! refused (412) and changes nothing, and concurrent changes without it never lose one another.

use reqwest::Method;
use serde_json::json;

use crate::common::*;
use crate::on_both_backends;
use kca::token::Scope;

on_both_backends!(if_match_refuses_a_stale_version, concurrent_patches_lose_no_change);

async fn send_with(
    server: &TestServer,
    method: Method,
    token: &str,
    if_match: &str,
    body: Option<serde_json::Value>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = server
        .client
        .request(method, format!("{}/v1/clusters/prod", server.url))
        .bearer_auth(token)
        .header("if-match", if_match);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

async fn if_match_refuses_a_stale_version(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    let (_, headers, _) = server.send(Method::GET, "/v1/clusters/prod", Some(&admin), None).await;
    let first = headers["etag"].to_str().unwrap().to_string();
    assert_eq!(first, "\"1\"");
    // With the current ETag: applied, and the answer carries the next one.
    let (status, headers, _) =
        send_with(&server, Method::PATCH, &admin, &first, Some(json!({"labels": {"a": "1"}}))).await;
    assert_eq!(status, 200);
    let second = headers["etag"].to_str().unwrap().to_string();
    assert_eq!(second, "\"2\"");
    // With the stale one: 412, nothing changed, nothing audited.
    let audit_before = server.json(Method::GET, "/v1/audit", Some(&admin), None, 200).await;
    let (status, headers, text) =
        send_with(&server, Method::PATCH, &admin, &first, Some(json!({"labels": {"a": "lost"}}))).await;
    assert_eq!(status, 412, "{text}");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(text.contains("\\\"2\\\""), "the problem names the current ETag: {text}");
    let (status, _, _) = send_with(&server, Method::DELETE, &admin, &first, None).await;
    assert_eq!(status, 412);
    let cluster = server.json(Method::GET, "/v1/clusters/prod", Some(&admin), None, 200).await;
    assert_eq!(cluster["labels"], json!({"a": "1"}));
    let audit_after = server.json(Method::GET, "/v1/audit", Some(&admin), None, 200).await;
    assert_eq!(audit_before["items"], audit_after["items"]);
    // Malformed If-Match: 400. `*`: any version.
    let (status, _, _) = send_with(&server, Method::PATCH, &admin, "soon", Some(json!({}))).await;
    assert_eq!(status, 400);
    let (status, _, _) = send_with(&server, Method::DELETE, &admin, &second, None).await;
    assert_eq!(status, 204);
}

async fn concurrent_patches_lose_no_change(backend: Backend) {
    let server = std::sync::Arc::new(TestServer::start(backend).await);
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    // Twenty clients each set their own label at once, without If-Match.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (server, admin) = (server.clone(), admin.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"labels": {format!("client-{i}"): "set"}});
            server.json(Method::PATCH, "/v1/clusters/prod", Some(&admin), Some(body), 200).await
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let cluster = server.json(Method::GET, "/v1/clusters/prod", Some(&admin), None, 200).await;
    let labels = cluster["labels"].as_object().unwrap();
    assert_eq!(labels.len(), 20, "a concurrent change was lost: {labels:?}");
    let (_, headers, _) = server.send(Method::GET, "/v1/clusters/prod", Some(&admin), None).await;
    assert_eq!(headers["etag"], "\"21\"", "one version per change");
}
