//! API tokens over the API: minted no broader than the minting token, listed with their last use,
//! revoked (refused on the next request, by every replica), and a signing key that rotates
//! without cutting off the tokens the previous key signed.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;
use crate::on_both_backends;
use crate::replicas::Deployment;
use kca::token::{Scope, TokenRequest};

on_both_backends!(
    token_lifecycle,
    tokens_are_minted_no_broader_than_their_minter,
    signing_key_rotation,
    the_audit_trail_is_filtered_by_the_server
);

async fn mint(server: &TestServer, token: &str, body: Value, expect: u16) -> Value {
    server.json(Method::POST, "/v1/tokens", Some(token), Some(body), expect).await
}

async fn token_lifecycle(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    let minted = mint(
        &server,
        &admin,
        json!({"subject": "ci", "scopes": ["kubeconfigs:issue"], "clusters": ["prod"], "ttl_seconds": 600}),
        201,
    )
    .await;
    let token = minted["token"].as_str().unwrap().to_string();
    let id = minted["id"].as_str().unwrap().to_string();
    let prod = server.json(Method::GET, "/v1/clusters/prod", Some(&admin), None, 200).await;
    assert_eq!(minted["clusters"], json!([prod["id"]]), "bound to the cluster's id");
    assert_eq!(minted["created_by"], "tester");
    // Used: it issues, and the list says when it was last used.
    server
        .json(
            Method::POST,
            "/v1/clusters/prod/kubeconfigs",
            Some(&token),
            Some(json!({"user": "alice"})),
            201,
        )
        .await;
    let listed = server.json(Method::GET, "/v1/tokens", Some(&admin), None, 200).await;
    let record = listed["items"].as_array().unwrap().iter().find(|t| t["id"] == id.as_str()).unwrap().clone();
    assert_eq!(record["subject"], "ci");
    assert!(record["last_used_at"].is_string(), "last use recorded: {record}");
    assert!(record["revoked_at"].is_null());
    assert!(!listed.to_string().contains(&token), "a list never shows a token");
    // Signing out is for single sign-on sessions: an API token that calls it stays valid.
    server.json(Method::POST, "/auth/logout", Some(&token), None, 400).await;
    server
        .json(Method::POST, "/v1/clusters/prod/kubeconfigs", Some(&token), Some(json!({"user": "bob"})), 201)
        .await;
    // Revoked: refused on the very next request, and the list says so.
    server.json(Method::DELETE, &format!("/v1/tokens/{id}"), Some(&admin), None, 204).await;
    let problem = server
        .json(
            Method::POST,
            "/v1/clusters/prod/kubeconfigs",
            Some(&token),
            Some(json!({"user": "alice"})),
            401,
        )
        .await;
    assert!(problem["detail"].as_str().unwrap().contains("revoked"));
    let listed = server.json(Method::GET, "/v1/tokens", Some(&admin), None, 200).await;
    let record = listed["items"].as_array().unwrap().iter().find(|t| t["id"] == id.as_str()).unwrap().clone();
    assert!(record["revoked_at"].is_string());
    // Audited: who minted and who revoked.
    let audit = server.json(Method::GET, "/v1/audit", Some(&admin), None, 200).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["object_id"] == id.as_str())
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["token.revoke", "token.create"]);
    // A token may revoke itself (signing out); an unknown id is a 404.
    let own =
        mint(&server, &admin, json!({"subject": "me", "scopes": ["read"], "ttl_seconds": 600}), 201).await;
    let own_token = own["token"].as_str().unwrap();
    server
        .json(
            Method::DELETE,
            &format!("/v1/tokens/{}", own["id"].as_str().unwrap()),
            Some(own_token),
            None,
            204,
        )
        .await;
    server.json(Method::GET, "/v1/clusters", Some(own_token), None, 401).await;
    server
        .json(Method::DELETE, &format!("/v1/tokens/{}", uuid::Uuid::new_v4()), Some(&admin), None, 404)
        .await;

    // A validly signed token that kca never registered is refused.
    let (unregistered, _) = server
        .app
        .tokens
        .mint(
            &TokenRequest {
                subject: "ghost".into(),
                scopes: vec![Scope::Admin],
                clusters: vec!["*".into()],
                groups: None,
                max_ttl: None,
                ttl: time::Duration::hours(1),
                person: None,
            },
            "nobody",
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    server.json(Method::GET, "/v1/clusters", Some(&unregistered), None, 401).await;

    // A token of a cluster deleted and created again is not a token of the new one.
    let old = server.token_for(&[Scope::Admin], &["prod"]).await;
    server.json(Method::DELETE, "/v1/clusters/prod", Some(&admin), None, 204).await;
    server.create_cluster(&admin, "prod").await;
    server.json(Method::GET, "/v1/clusters/prod", Some(&old), None, 403).await;
    server.json(Method::POST, "/v1/clusters/prod/authorities/operators/rotate", Some(&old), None, 403).await;
}

async fn tokens_are_minted_no_broader_than_their_minter(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    server.create_cluster(&admin, "staging").await;
    let prod_admin = server
        .mint(&TokenRequest {
            subject: "prod-admin".into(),
            scopes: vec![Scope::Admin],
            clusters: vec![
                server.json(Method::GET, "/v1/clusters/prod", Some(&admin), None, 200).await["id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ],
            groups: Some(vec!["team-*".into()]),
            max_ttl: Some(3600),
            ttl: time::Duration::hours(1),
            person: None,
        })
        .await;
    // (body, status, rule)
    let ttl = 60;
    let cases = [
        (
            json!({"subject": "x", "scopes": ["read"], "clusters": ["*"], "ttl_seconds": ttl}),
            403,
            Some("token_clusters"),
        ),
        (
            json!({"subject": "x", "scopes": ["read"], "clusters": ["staging"], "ttl_seconds": ttl}),
            403,
            Some("token_clusters"),
        ),
        (
            json!({"subject": "x", "scopes": ["read"], "groups": ["*"], "ttl_seconds": ttl}),
            403,
            Some("token_groups"),
        ),
        (
            json!({"subject": "x", "scopes": ["read"], "max_ttl_seconds": 7200, "ttl_seconds": ttl}),
            403,
            Some("token_max_ttl"),
        ),
        (json!({"subject": "x", "scopes": ["read"]}), 403, Some("token_lifetime")),
        (json!({"subject": "x", "scopes": ["read"], "clusters": ["nope"], "ttl_seconds": ttl}), 422, None),
        (json!({"subject": "", "scopes": ["read"], "ttl_seconds": ttl}), 422, None),
        (json!({"subject": "x", "scopes": [], "ttl_seconds": ttl}), 422, None),
    ];
    let before = server.json(Method::GET, "/v1/tokens", Some(&admin), None, 200).await["items"]
        .as_array()
        .unwrap()
        .len();
    for (body, status, rule) in cases {
        let problem = mint(&server, &prod_admin, body.clone(), status).await;
        assert_eq!(problem["rule"].as_str(), rule, "{body}");
    }
    let after = server.json(Method::GET, "/v1/tokens", Some(&admin), None, 200).await["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after, "a refused mint registered a token");
    // Within its bounds it mints, and the new token is as narrow.
    let minted = mint(
        &server,
        &prod_admin,
        json!({"subject": "deployer", "scopes": ["kubeconfigs:issue"], "groups": ["team-*"], "max_ttl_seconds": 600, "ttl_seconds": 600}),
        201,
    )
    .await;
    let deployer = minted["token"].as_str().unwrap();
    // Bounds left out are the minter's own.
    let inherited =
        mint(&server, &prod_admin, json!({"subject": "y", "scopes": ["read"], "ttl_seconds": ttl}), 201)
            .await;
    assert_eq!(inherited["groups"], json!(["team-*"]));
    assert_eq!(inherited["max_ttl_seconds"], 3600);
    server.json(Method::GET, "/v1/clusters/staging", Some(deployer), None, 403).await;
    let issue = |user: &str, groups: Value| json!({"user": user, "groups": groups, "ttl_seconds": 600});
    server
        .json(
            Method::POST,
            "/v1/clusters/prod/kubeconfigs",
            Some(deployer),
            Some(issue("a", json!(["team-a"]))),
            201,
        )
        .await;
    server
        .json(
            Method::POST,
            "/v1/clusters/prod/kubeconfigs",
            Some(deployer),
            Some(issue("a", json!(["ops"]))),
            403,
        )
        .await;
    // Tokens longer than the maximum lifetime are neither minted nor accepted.
    mint(&server, &admin, json!({"subject": "x", "scopes": ["read"], "ttl_seconds": 91 * 86_400}), 422).await;
    // Non-admins mint nothing; a limited admin lists only tokens within its clusters.
    let reader = server.token(&[Scope::Read]).await;
    mint(&server, &reader, json!({"subject": "x", "scopes": ["read"]}), 403).await;
    let seen = server.json(Method::GET, "/v1/tokens", Some(&prod_admin), None, 200).await;
    for item in seen["items"].as_array().unwrap() {
        assert_ne!(
            item["clusters"],
            json!(["*"]),
            "a limited admin sees only tokens limited to its clusters"
        );
    }
    assert!(seen["items"].as_array().unwrap().iter().any(|t| t["subject"] == "deployer"));
}

async fn signing_key_rotation(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token(&[Scope::Admin]).await;
    let before = server.token(&[Scope::Read]).await;
    let kid = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    assert_eq!(kid(&before), "1");
    // Only an admin valid for every cluster rotates.
    let reader = server.token(&[Scope::Read]).await;
    server.json(Method::POST, "/v1/token-keys/rotate", Some(&reader), None, 403).await;
    let rotated = server.json(Method::POST, "/v1/token-keys/rotate", Some(&admin), None, 200).await;
    assert_eq!(rotated["key_id"], 2);
    let after = server.token(&[Scope::Read]).await;
    assert_eq!(kid(&after), "2", "new tokens are signed by the new key");
    // Tokens of the previous key keep working until they expire.
    server.json(Method::GET, "/v1/clusters", Some(&before), None, 200).await;
    server.json(Method::GET, "/v1/clusters", Some(&after), None, 200).await;
    let audit = server.json(Method::GET, "/v1/audit", Some(&admin), None, 200).await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "token_key.rotate" && e["object_id"] == "2")
    );
    // A restart loads both keys from the database.
    let (dir, database) = server.stop().await;
    let server = TestServer::resume(dir, database).await;
    server.json(Method::GET, "/v1/clusters", Some(&before), None, 200).await;
    server.json(Method::GET, "/v1/clusters", Some(&after), None, 200).await;
}

/// Two replicas on one Postgres: a token revoked through one is refused by the other within a
/// second; a key rotated on one is known to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_every_replica_within_a_second() {
    let database = PgDatabase::create();
    let deployment = Deployment::new(database.url.clone());
    let admin = deployment.token("admin");
    let a = deployment.start_replica("a", &[]).await;
    let b = deployment.start_replica("b", &[]).await;
    let get = |url: String, token: String| {
        let client = deployment.client.clone();
        async move { client.get(url).bearer_auth(token).send().await.unwrap().status().as_u16() }
    };
    let (status, minted) = deployment
        .post(&a, "/v1/tokens", &admin, json!({"subject": "short", "scopes": ["read"], "ttl_seconds": 600}))
        .await;
    assert_eq!(status, 201, "{minted}");
    let token = minted["token"].as_str().unwrap().to_string();
    // Known to b at once (b looks it up), and used there.
    assert_eq!(get(format!("{}/v1/clusters", b.url), token.clone()).await, 200);
    let revoked_at = Instant::now();
    let response = deployment
        .client
        .delete(format!("{}/v1/tokens/{}", a.url, minted["id"].as_str().unwrap()))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(get(format!("{}/v1/clusters", a.url), token.clone()).await, 401);
    loop {
        if get(format!("{}/v1/clusters", b.url), token.clone()).await == 401 {
            break;
        }
        assert!(revoked_at.elapsed() < Duration::from_secs(1), "replica b still accepts a revoked token");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = revoked_at.elapsed();
    eprintln!("replica b refused the revoked token after {elapsed:?}");
    // A key rotated through b signs tokens a accepts.
    let (status, _) = deployment.post(&b, "/v1/token-keys/rotate", &admin, json!(null)).await;
    assert_eq!(status, 200);
    let (status, minted) = deployment
        .post(&b, "/v1/tokens", &admin, json!({"subject": "new-key", "scopes": ["read"], "ttl_seconds": 600}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        get(format!("{}/v1/clusters", a.url), minted["token"].as_str().unwrap().to_string()).await,
        200
    );
    assert_eq!(get(format!("{}/v1/clusters", a.url), admin.clone()).await, 200, "the old key still verifies");
}

/// `GET /v1/audit?cluster=&actor=&action=&since=&until=`: filtered in the database, paged by cursor
/// within the filter, a token limited to some clusters refused another's (403), bad values 422.
async fn the_audit_trail_is_filtered_by_the_server(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token(&[Scope::Admin]).await;
    let a = server.create_cluster(&admin, "a").await;
    server.create_cluster(&admin, "b").await;
    for user in ["u1", "u2", "u3"] {
        server
            .json(Method::POST, "/v1/clusters/a/kubeconfigs", Some(&admin), Some(json!({"user": user})), 201)
            .await;
    }
    server
        .json(Method::POST, "/v1/clusters/b/kubeconfigs", Some(&admin), Some(json!({"user": "x"})), 201)
        .await;
    let get = |query: String, token: String, expect: u16| {
        let server = &server;
        async move { server.json(Method::GET, &format!("/v1/audit?{query}"), Some(&token), None, expect).await }
    };
    let actions = |page: &Value| -> Vec<String> {
        page["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_string()).collect()
    };
    // By cluster (name or id), and by action, exactly or by prefix.
    let of_a = get("cluster=a".into(), admin.clone(), 200).await;
    assert!(of_a["items"].as_array().unwrap().iter().all(|e| e["cluster_id"] == a["id"]), "{of_a}");
    assert_eq!(actions(&of_a).iter().filter(|a| a.starts_with("certificate.")).count(), 3, "{of_a}");
    let by_id = get(format!("cluster={}", a["id"].as_str().unwrap()), admin.clone(), 200).await;
    assert_eq!(by_id["items"], of_a["items"]);
    let issued = get("cluster=a&action=certificate.*".into(), admin.clone(), 200).await;
    assert_eq!(issued["items"].as_array().unwrap().len(), 3);
    let exact = get(format!("action={}", actions(&issued)[0]), admin.clone(), 200).await;
    assert_eq!(exact["items"].as_array().unwrap().len(), 4, "both clusters: {exact}");
    assert!(actions(&get("action=certificate".into(), admin.clone(), 200).await).is_empty(), "not a prefix");
    // Paged within the filter: two pages of 2 and 1, newest first, no overlap.
    let first = get("cluster=a&action=certificate.*&limit=2".into(), admin.clone(), 200).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second =
        get(format!("cluster=a&action=certificate.*&limit=2&cursor={cursor}"), admin.clone(), 200).await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert!(second["next_cursor"].is_null());
    let ids: Vec<i64> = [&first, &second]
        .iter()
        .flat_map(|p| p["items"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        ids,
        issued["items"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect::<Vec<_>>()
    );
    // By actor and time.
    assert_eq!(get("actor=tester".into(), admin.clone(), 200).await["items"].as_array().unwrap().len(), 6);
    assert!(get("actor=nobody".into(), admin.clone(), 200).await["items"].as_array().unwrap().is_empty());
    let newest = issued["items"][0]["at"].as_str().unwrap().to_string();
    let since = get(format!("cluster=a&since={}", newest.replace('+', "%2B")), admin.clone(), 200).await;
    assert!(since["items"].as_array().unwrap().iter().all(|e| e["at"].as_str().unwrap() >= newest.as_str()));
    assert!(!since["items"].as_array().unwrap().is_empty());
    let until = get("until=2000-01-01T00:00:00Z".into(), admin.clone(), 200).await;
    assert!(until["items"].as_array().unwrap().is_empty());
    assert!(
        get("since=2999-01-01T00:00:00Z".into(), admin.clone(), 200).await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // A token limited to cluster a: its events only, b refused whether named or by id, a
    // cluster that does not exist refused alike.
    let only_a = server.token_for(&[Scope::Admin], &["a"]).await;
    let seen = get(String::new(), only_a.clone(), 200).await;
    assert!(seen["items"].as_array().unwrap().iter().all(|e| e["cluster_id"] == a["id"]), "{seen}");
    assert_eq!(get("cluster=a".into(), only_a.clone(), 200).await["items"], of_a["items"]);
    let b_id = server.json(Method::GET, "/v1/clusters/b", Some(&admin), None, 200).await["id"].clone();
    for other in ["b".to_string(), b_id.as_str().unwrap().to_string(), "nope".into()] {
        let problem = get(format!("cluster={other}"), only_a.clone(), 403).await;
        assert!(!problem.to_string().contains("certificate."), "{problem}");
    }
    get("cluster=nope".into(), admin.clone(), 404).await;
    // Bad values: 422 naming the field, or 400 for a bad cursor.
    for (query, field) in [("since=yesterday", "since"), ("until=2030-01-01", "until"), ("actor=", "actor")] {
        let problem = get(query.into(), admin.clone(), 422).await;
        assert_eq!(problem["field"], field, "{problem}");
    }
    get("cursor=!!".into(), admin.clone(), 400).await;
    // Nothing but admins.
    let reader = server.token(&[Scope::Read]).await;
    get("cluster=a".into(), reader, 403).await;
}
