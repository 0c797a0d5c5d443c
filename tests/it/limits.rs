//! Hostile and malformed input: the problem shape, the right status, and no change.

use reqwest::Method;
use serde_json::json;

use crate::common::*;
use crate::on_both_backends;
use kca::token::Scope;

on_both_backends!(bad_input_changes_nothing);

async fn bad_input_changes_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    let before = server.json(Method::GET, "/v1/clusters", Some(&admin), None, 200).await;

    // Oversized body: 413.
    let huge = json!({"name": "big", "server": "https://b:6443", "labels": {"x": "y".repeat(100 * 1024)}});
    let problem = server.json(Method::POST, "/v1/clusters", Some(&admin), Some(huge), 413).await;
    assert_eq!(problem["type"], "urn:kca:problem:payload-too-large");

    // Malformed JSON, wrong content type, unknown fields, wrong types: 400.
    for (body, content_type) in [
        ("{\"name\": ", "application/json"),
        ("name=x", "application/x-www-form-urlencoded"),
        ("{\"name\": \"x\", \"server\": \"https://x:1\", \"color\": \"red\"}", "application/json"),
        ("{\"name\": 42, \"server\": \"https://x:1\"}", "application/json"),
        ("[]", "application/json"),
    ] {
        let response = server
            .client
            .post(format!("{}/v1/clusters", server.url))
            .bearer_auth(&admin)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!(status == 400 || status == 415, "{body}: {status}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(problem["status"], status);
        assert!(!problem["detail"].as_str().unwrap().is_empty());
    }

    // Invalid values: 422, naming the field.
    for (body, field) in [
        (json!({"name": "Bad_Name", "server": "https://x:1"}), "name"),
        (json!({"name": &"a".repeat(64), "server": "https://x:1"}), "name"),
        (json!({"name": "ok", "server": "http://x:1"}), "server"),
        (
            json!({"name": "ok", "server": "https://x:1", "policy": {"min_ttl_seconds": 0}}),
            "policy.min_ttl_seconds",
        ),
        (json!({"name": "ok", "server": "https://x:1", "labels": {"bad key!": "v"}}), "labels.bad key!"),
    ] {
        let problem = server.json(Method::POST, "/v1/clusters", Some(&admin), Some(body), 422).await;
        assert_eq!(problem["field"], field);
    }
    // Unknown routes and methods.
    server.json(Method::GET, "/v1/nothing", None, None, 404).await;
    server.json(Method::PUT, "/v1/clusters", Some(&admin), None, 405).await;

    let after = server.json(Method::GET, "/v1/clusters", Some(&admin), None, 200).await;
    assert_eq!(before, after);
    let audit = server.json(Method::GET, "/v1/audit", Some(&admin), None, 200).await;
    let changes: Vec<_> =
        audit["items"].as_array().unwrap().iter().filter(|e| e["action"] != "token.create").collect();
    assert_eq!(changes.len(), 1, "only the one creation was audited");
}
