//! Every route of the API, walked from the OpenAPI document the router is built from, with a token
//! of every kind: none, each scope, an admin of another cluster, a revoked token, and an admin of
//! a cluster that was deleted and created again under the same name. Each call answers what the
//! permission table below says, and a refused call changes nothing. A route added later without
//! an entry in the table fails this test.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;
use crate::on_both_backends;
use kca::token::Scope;

on_both_backends!(every_route_checks_the_token_and_its_cluster);

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Need {
    /// Nothing (public material, health).
    Public,
    /// A token with this scope (or admin), valid for the route's cluster.
    Scope(Scope),
    /// A token with this scope (or admin) valid for every cluster.
    Unrestricted(Scope),
    /// Any valid token.
    Authenticated,
    /// Single sign-on, which this server has not configured: 404 for everyone.
    SingleSignOn,
}

fn need(method: &str, path: &str) -> Need {
    use Need::*;
    match (method, path) {
        ("GET", "/healthz" | "/readyz" | "/metrics" | "/v1/profiles") => Public,
        ("GET", "/v1/clusters") => Scope(kca::token::Scope::Read),
        ("POST", "/v1/clusters") => Unrestricted(kca::token::Scope::ClustersWrite),
        ("GET", "/v1/clusters/{cluster}") => Scope(kca::token::Scope::Read),
        ("PATCH" | "DELETE", "/v1/clusters/{cluster}") => Scope(kca::token::Scope::ClustersWrite),
        (
            "GET",
            "/v1/clusters/{cluster}/authorities"
            | "/v1/clusters/{cluster}/authorities/{kind}"
            | "/v1/clusters/{cluster}/authorities/{kind}/ca.pem"
            | "/v1/clusters/{cluster}/authorities/{kind}/crl"
            | "/v1/clusters/{cluster}/authorities/{kind}/crl.pem"
            | "/v1/clusters/{cluster}/client-ca.pem"
            | "/v1/clusters/{cluster}/client-crl.pem"
            | "/v1/clusters/{cluster}/revoked.map",
        ) => Public,
        (
            "POST",
            "/v1/clusters/{cluster}/authorities/{kind}/rotate"
            | "/v1/clusters/{cluster}/authorities/{kind}/import"
            | "/v1/clusters/{cluster}/authorities/{kind}/intermediate/csr"
            | "/v1/clusters/{cluster}/authorities/{kind}/intermediate/certificate"
            | "/v1/clusters/{cluster}/authorities/{kind}/generations/{generation}/retire",
        ) => Scope(kca::token::Scope::Admin),
        ("GET", "/v1/clusters/{cluster}/service-account/keys.pem") => Public,
        ("GET", "/v1/clusters/{cluster}/service-account/keys") => Scope(kca::token::Scope::Read),
        (
            "POST",
            "/v1/clusters/{cluster}/service-account/keys/rotate"
            | "/v1/clusters/{cluster}/service-account/keys/import"
            | "/v1/clusters/{cluster}/service-account/keys/{key_id}/retire"
            | "/v1/clusters/{cluster}/service-account/signing-key/export",
        ) => Scope(kca::token::Scope::Admin),
        ("GET", "/v1/clusters/{cluster}/certificates" | "/v1/clusters/{cluster}/certificates/{serial}") => {
            Scope(kca::token::Scope::Read)
        }
        // Every component profile is privileged.
        ("POST", "/v1/clusters/{cluster}/certificates") => Scope(kca::token::Scope::Admin),
        ("POST", "/v1/clusters/{cluster}/kubeconfigs") => Scope(kca::token::Scope::KubeconfigsIssue),
        (
            "POST",
            "/v1/clusters/{cluster}/certificates/{serial}/revoke" | "/v1/clusters/{cluster}/revocations",
        ) => Scope(kca::token::Scope::CertificatesRevoke),
        ("GET", "/v1/audit") => Scope(kca::token::Scope::Admin),
        ("GET" | "POST", "/v1/tokens") | ("DELETE", "/v1/tokens/{id}") => Scope(kca::token::Scope::Admin),
        ("POST", "/v1/token-keys/rotate") => Unrestricted(kca::token::Scope::Admin),
        ("GET", "/v1/me") | ("POST", "/auth/logout") => Authenticated,
        ("GET", "/auth/login" | "/auth/callback")
        | (
            "POST",
            "/v1/auth/device" | "/v1/auth/device/token" | "/v1/auth/session/refresh" | "/v1/auth/cli/token",
        ) => SingleSignOn,
        _ => panic!("{method} {path} has no entry in the permission table of tests/it/routes.rs"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Holder {
    Nobody,
    Scoped(Scope),
    /// An admin limited to another cluster.
    OtherCluster,
    /// An admin token revoked over the API.
    Revoked,
    /// An admin limited to a cluster deleted and then created again under the same name.
    Recreated,
}

/// `None` when the call is allowed, else the status that refuses it.
fn expected(need: Need, holder: Holder, cluster_route: bool) -> Option<u16> {
    match holder {
        Holder::Revoked => Some(401),
        _ if need == Need::SingleSignOn => Some(404),
        Holder::Nobody => (need != Need::Public).then_some(401),
        Holder::OtherCluster | Holder::Recreated if cluster_route => Some(403),
        Holder::OtherCluster | Holder::Recreated => matches!(need, Need::Unrestricted(_)).then_some(403),
        Holder::Scoped(scope) => match need {
            Need::Public | Need::Authenticated | Need::SingleSignOn => None,
            Need::Scope(needed) | Need::Unrestricted(needed) => {
                (scope != Scope::Admin && scope != needed).then_some(403)
            }
        },
    }
}

/// A body that the route accepts from an allowed caller.
fn body(method: &str, path: &str) -> Option<Value> {
    Some(match (method, path) {
        ("POST", "/v1/clusters") => json!({"name": "new", "server": "https://new.example:6443"}),
        ("PATCH", "/v1/clusters/{cluster}") => json!({"labels": {"team": "a"}}),
        ("POST", "/v1/clusters/{cluster}/kubeconfigs") => json!({"user": "bob", "groups": ["dev"]}),
        ("POST", "/v1/clusters/{cluster}/certificates") => json!({"profile": "scheduler"}),
        ("POST", "/v1/clusters/{cluster}/certificates/{serial}/revoke") => json!({}),
        ("POST", "/v1/clusters/{cluster}/revocations") => json!({"user": "alice"}),
        ("POST", "/v1/clusters/{cluster}/authorities/{kind}/generations/{generation}/retire") => {
            json!({"force": true})
        }
        ("POST", "/v1/tokens") => json!({"subject": "minted", "scopes": ["read"], "ttl_seconds": 600}),
        ("POST", "/v1/clusters/{cluster}/authorities/{kind}/import") => importable_ca().clone(),
        ("POST", "/v1/clusters/{cluster}/service-account/keys/import") => {
            let (_, pkcs8) = kca::pki::SigningKeyPair::generate(kca::pki::KeyAlgorithm::P256).unwrap();
            json!({"private_key_pem": kca::pki::to_pem("PRIVATE KEY", &pkcs8)})
        }
        ("POST", "/v1/clusters/{cluster}/authorities/{kind}/intermediate/certificate") => {
            SIGNED_INTERMEDIATE.get().expect("signed before the walk").clone()
        }
        ("POST", "/v1/auth/device/token") => json!({"handle": "x"}),
        ("POST", "/v1/auth/cli/token") => json!({"code": "x", "verifier": "y"}),
        _ => return None,
    })
}

/// The certificate an organisation's root signed for the operators intermediate request made
/// before the walk, and its chain.
static SIGNED_INTERMEDIATE: std::sync::OnceLock<Value> = std::sync::OnceLock::new();

/// Ask for an operators intermediate of `cluster` and sign its CSR with an openssl root; answers
/// the body that installs it.
async fn signed_intermediate(server: &TestServer, admin: &str, cluster: &str) -> Value {
    let answer = server
        .json(
            Method::POST,
            &format!("/v1/clusters/{cluster}/authorities/operators/intermediate/csr"),
            Some(admin),
            None,
            201,
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    std::fs::write(path("int.csr"), answer["csr_pem"].as_str().unwrap()).unwrap();
    std::fs::write(
        path("ext.cnf"),
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = x\n[root]\nbasicConstraints = critical, CA:TRUE\n\
         keyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n[int]\n\
         basicConstraints = critical, CA:TRUE, pathlen:0\nkeyUsage = critical, keyCertSign, cRLSign\n\
         subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
    )
    .unwrap();
    run_ok("openssl", &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &path("root.key")]);
    run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-new",
            "-config",
            &path("ext.cnf"),
            "-key",
            &path("root.key"),
            "-subj",
            "/CN=Org Root",
            "-days",
            "30",
            "-extensions",
            "root",
            "-out",
            &path("root.crt"),
        ],
    );
    run_ok(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &path("int.csr"),
            "-CA",
            &path("root.crt"),
            "-CAkey",
            &path("root.key"),
            "-CAcreateserial",
            "-days",
            "10",
            "-extfile",
            &path("ext.cnf"),
            "-extensions",
            "int",
            "-out",
            &path("int.crt"),
        ],
    );
    json!({
        "certificate_pem": std::fs::read_to_string(path("int.crt")).unwrap(),
        "chain_pem": std::fs::read_to_string(path("root.crt")).unwrap(),
    })
}

/// A CA and its key to import (made once by kca's PKI core, valid now).
fn importable_ca() -> &'static Value {
    static CA: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    CA.get_or_init(|| {
        let identity = kca::pki::ca::AuthorityIdentity {
            cluster_name: "elsewhere",
            cluster_id: "00000000-0000-4000-8000-000000000000",
            kind: kca::pki::AuthorityKind::Operators,
            generation: 1,
        };
        let made = kca::pki::ca::create_authority(
            &identity,
            kca::pki::KeyAlgorithm::P256,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        json!({
            "certificate_pem": kca::pki::to_pem("CERTIFICATE", &made.certificate_der),
            "private_key_pem": kca::pki::to_pem("PRIVATE KEY", &made.pkcs8),
        })
    })
}

/// What a refused call must leave alone: every audited change, every certificate and token.
async fn state(server: &TestServer) -> (usize, usize, usize, Vec<String>) {
    let store = server.app.store.as_ref();
    let audit = store.list_audit(None, None, 1000).await.unwrap().len();
    let mut certificates = 0;
    let clusters = store.list_clusters(None, None, 100).await.unwrap();
    for cluster in &clusters {
        let filter = kca::store::CertificateFilter { limit: 500, ..Default::default() };
        certificates += store
            .list_certificates(cluster.id, &filter, time::OffsetDateTime::now_utc())
            .await
            .unwrap()
            .len();
    }
    let revoked_tokens = store.list_revoked_tokens(time::OffsetDateTime::now_utc()).await.unwrap().len();
    let names = clusters.iter().map(|c| format!("{}:{}:{:?}", c.name, c.id, c.labels)).collect();
    (audit, certificates, revoked_tokens, names)
}

async fn every_route_checks_the_token_and_its_cluster(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token(&[Scope::Admin]).await;
    // A cluster named prod that existed before, and a token limited to it.
    server.create_cluster(&admin, "prod").await;
    let recreated = server.token_for(&[Scope::Admin], &["prod"]).await;
    server.json(Method::DELETE, "/v1/clusters/prod", Some(&admin), None, 204).await;
    server
        .json(
            Method::POST,
            "/v1/clusters",
            Some(&admin),
            Some(json!({"name": "prod", "server": "https://k8s.example:6443", "policy": component_policy()})),
            201,
        )
        .await;
    server.create_cluster(&admin, "staging").await;
    let other_cluster = server.token_for(&[Scope::Admin], &["staging"]).await;
    let revoked = server.token(&[Scope::Admin]).await;
    let revoked_id = server.app.tokens.verify(&revoked, time::OffsetDateTime::now_utc()).unwrap().jti.clone();
    server.json(Method::DELETE, &format!("/v1/tokens/{revoked_id}"), Some(&admin), None, 204).await;
    let victim = server.token(&[Scope::Read]).await;
    let victim_id = server.app.tokens.verify(&victim, time::OffsetDateTime::now_utc()).unwrap().jti.clone();
    let issued = server
        .json(
            Method::POST,
            "/v1/clusters/prod/kubeconfigs",
            Some(&admin),
            Some(json!({"user": "alice"})),
            201,
        )
        .await;
    let serial = issued["serial"].as_str().unwrap().to_string();

    let mut holders = vec![(Holder::Nobody, None)];
    // Admin last, so that each allowed change below is made with the narrowest scope that may.
    for scope in Scope::ALL.into_iter().filter(|s| *s != Scope::Admin).chain([Scope::Admin]) {
        holders.push((Holder::Scoped(scope), Some(server.token(&[scope]).await)));
    }
    holders.push((Holder::OtherCluster, Some(other_cluster)));
    holders.push((Holder::Revoked, Some(revoked)));
    holders.push((Holder::Recreated, Some(recreated)));

    let document: Value = serde_json::from_str(&kca::http::openapi_json()).unwrap();
    let mut routes = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                routes.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(routes.len() >= 30, "the walk sees every route ({} found)", routes.len());
    // Two service-account keys: the first one retiring, for the retire route.
    let sa_rotate = "/v1/clusters/prod/service-account/keys/rotate";
    let retiring = server.json(Method::POST, sa_rotate, Some(&admin), None, 201).await;
    let retiring_key_id = retiring["key_id"].as_str().unwrap().to_string();
    server.json(Method::POST, sa_rotate, Some(&admin), None, 201).await;
    let concrete = |path: &str| {
        path.replace("{cluster}", "prod")
            .replace("{kind}", "operators")
            .replace("{generation}", "1")
            .replace("{serial}", &serial)
            .replace("{id}", &victim_id)
            .replace("{key_id}", &retiring_key_id)
    };

    let install = signed_intermediate(&server, &admin, "prod").await;
    SIGNED_INTERMEDIATE.get_or_init(|| install);
    let before = state(&server).await;
    let mut allowed_changes = Vec::new();
    let mut checked = 0;
    for (method, path) in &routes {
        let need = need(method, path);
        let cluster_route = path.starts_with("/v1/clusters/{cluster}");
        for (holder, token) in &holders {
            let expectation = expected(need, *holder, cluster_route);
            let url = concrete(path);
            let http_method = Method::from_bytes(method.as_bytes()).unwrap();
            match expectation {
                Some(status) => {
                    let (got, headers, text) =
                        server.send(http_method, &url, token.as_deref(), body(method, path)).await;
                    assert_eq!(got.as_u16(), status, "{method} {path} as {holder:?}: {text}");
                    // The browser's sign-in routes answer people with a page.
                    let page = path.starts_with("/auth/") && method == "GET" && status == 404;
                    let expected = if page { "text/html; charset=utf-8" } else { "application/problem+json" };
                    assert_eq!(headers["content-type"], expected, "{method} {path}");
                    checked += 1;
                }
                None if method == "GET" => {
                    let (got, _, text) = server.send(http_method, &url, token.as_deref(), None).await;
                    assert!(got.is_success(), "{method} {path} as {holder:?}: {got} {text}");
                    checked += 1;
                }
                // Signing out is tried last, with a token of its own.
                None if path == "/auth/logout" => {}
                None => {
                    if !allowed_changes.iter().any(|(m, p, _)| m == method && p == path) {
                        allowed_changes.push((method.clone(), path.clone(), token.clone()));
                    }
                }
            }
        }
    }
    assert_eq!(state(&server).await, before, "a refused call changed something");
    assert!(checked > 250, "{checked} calls checked");

    // Each change an allowed caller may make goes through, the cluster's deletion last.
    allowed_changes.sort_by_key(|(method, path, _)| {
        (path == "/v1/clusters/{cluster}" && method == "DELETE", path.contains("/retire"), path.clone())
    });
    for (method, path, token) in allowed_changes {
        let (status, _, text) = server
            .send(
                Method::from_bytes(method.as_bytes()).unwrap(),
                &concrete(&path),
                token.as_deref(),
                body(&method, &path),
            )
            .await;
        assert!(status.is_success(), "{method} {path}: {status} {text}");
    }
    // The victim token was revoked by the one allowed call, and is refused now.
    server.json(Method::GET, "/v1/clusters", Some(&victim), None, 401).await;
    // Signing out ends single sign-on sessions only (tests/it/sso.rs): an API token, whatever
    // its scopes, is refused and keeps working.
    let staying = server.token(&[Scope::Read]).await;
    server.json(Method::POST, "/auth/logout", Some(&staying), None, 400).await;
    server.json(Method::GET, "/v1/me", Some(&staying), None, 200).await;
}
