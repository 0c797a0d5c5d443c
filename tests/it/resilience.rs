//! A panic in a handler answers 500 (a problem document) and the server keeps serving: nothing it
//! shares with other requests is left locked or poisoned.

use std::net::SocketAddr;

use serde_json::json;

use crate::common::*;
use kca::token::Scope;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_500_and_the_next_request_is_served() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    // The service's own routes and layers, plus one route whose handler panics while it holds
    // what every issuance needs: the published snapshots and the signers.
    let app = server.app.clone();
    let panicking = axum::routing::get(move || {
        let app = app.clone();
        async move {
            let _snapshots = app.published.snapshots();
            panic!("boom");
            #[allow(unreachable_code)]
            ()
        }
    });
    let routes = kca::http::api().0.route("/panic", panicking);
    let service = kca::http::serve_routes(routes, server.app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, service.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
    });
    let client = reqwest::Client::new();
    for _ in 0..10 {
        let response = client.get(format!("{url}/panic")).send().await.unwrap();
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(problem["status"], 500);
        assert!(!problem.to_string().contains("boom"), "the answer reveals nothing of the panic");
    }
    let issued = client
        .post(format!("{url}/v1/clusters/prod/kubeconfigs"))
        .bearer_auth(&admin)
        .json(&json!({"user": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(issued.status(), 201);
    assert_eq!(client.get(format!("{url}/v1/clusters/prod/authorities")).send().await.unwrap().status(), 200);
}
