//! No path from a narrow token to a privileged identity: every component profile and every
//! privileged group or user is refused (403, naming the rule) to issuing tokens and under the
//! default policy, and issued only to an admin of the cluster whose policy names it.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;
use kca::token::Scope;

const PRIVILEGED_GROUPS: [&str; 4] =
    ["system:masters", "kubeadm:cluster-admins", "system:nodes", "system:kube-controller-manager"];

/// A request each profile accepts, with names the `named` cluster declares.
fn component_request(profile: &Value) -> Value {
    let name = profile["name"].as_str().unwrap();
    let mut request = json!({"profile": name});
    if profile["common_name"]["rule"] == "node" {
        request["common_name"] = json!("system:node:worker-1");
    }
    if profile["subject_alt_names"] == "required" {
        request["dns_names"] = json!([if profile["authority"] == "kubelet" { "worker-1" } else { "e0" }]);
    }
    request
}

async fn certificate_count(server: &TestServer, admin: &str) -> usize {
    let mut count = 0;
    for cluster in ["default", "named"] {
        let path = format!("/v1/clusters/{cluster}/certificates?limit=500");
        count +=
            server.json(Method::GET, &path, Some(admin), None, 200).await["items"].as_array().unwrap().len();
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_identities_need_an_admin_and_a_policy_that_names_them() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "default").await;
    let mut policy = component_policy();
    policy["allowed_privileged_groups"] = json!(PRIVILEGED_GROUPS);
    policy["allowed_privileged_users"] = json!(["system:kube-proxy"]);
    server
        .json(
            Method::POST,
            "/v1/clusters",
            Some(&admin),
            Some(json!({"name": "named", "server": "https://k8s.example:6443", "policy": policy})),
            201,
        )
        .await;
    server.create_cluster(&admin, "other").await;
    let certificates_issuer = server.token(&[Scope::CertificatesIssue]).await;
    let kubeconfigs_issuer = server.token(&[Scope::KubeconfigsIssue]).await;
    let writer = server.token(&[Scope::ClustersWrite, Scope::Read]).await;
    let other_admin = server.token_for(&[Scope::Admin], &["other"]).await;
    let before = certificate_count(&server, &admin).await;

    let profiles = server.json(Method::GET, "/v1/profiles", None, None, 200).await;
    assert_eq!(profiles.as_array().unwrap().len(), 13);
    let component = |cluster: &str| format!("/v1/clusters/{cluster}/certificates");
    for profile in profiles.as_array().unwrap() {
        let request = component_request(profile);
        for (token, cluster, status, rule) in [
            (&certificates_issuer, "named", 403, Some("privileged_identity")),
            (&kubeconfigs_issuer, "named", 403, Some("privileged_identity")),
            (&writer, "named", 403, Some("privileged_identity")),
            (&admin, "default", 403, Some("allowed_profiles")),
            (&other_admin, "named", 403, None),
        ] {
            let problem = server
                .json(Method::POST, &component(cluster), Some(token), Some(request.clone()), status)
                .await;
            assert_eq!(problem["rule"].as_str(), rule, "{request} on {cluster}");
        }
    }
    for group in PRIVILEGED_GROUPS {
        let request = json!({"user": "alice", "groups": [group]});
        for (token, cluster, rule) in [
            (&kubeconfigs_issuer, "named", "privileged_identity"),
            (&kubeconfigs_issuer, "default", "privileged_identity"),
            (&admin, "default", "allowed_privileged_groups"),
        ] {
            let path = format!("/v1/clusters/{cluster}/kubeconfigs");
            let problem = server.json(Method::POST, &path, Some(token), Some(request.clone()), 403).await;
            assert_eq!(problem["rule"], rule, "{group} on {cluster}");
            assert_eq!(problem["field"], "groups[0]");
        }
    }
    for user in ["system:kube-proxy", "system:node:worker-1"] {
        let problem = server
            .json(
                Method::POST,
                "/v1/clusters/named/kubeconfigs",
                Some(&kubeconfigs_issuer),
                Some(json!({"user": user})),
                403,
            )
            .await;
        assert_eq!(problem["rule"], "privileged_identity");
    }
    // Look-alikes of privileged names are refused outright.
    for group in ["system\u{2236}masters", "system\u{FF1A}masters", "system:\u{200B}masters"] {
        let body = json!({"user": "alice", "groups": [group]});
        server
            .json(
                Method::POST,
                "/v1/clusters/default/kubeconfigs",
                Some(&kubeconfigs_issuer),
                Some(body),
                422,
            )
            .await;
    }
    // Serving certificates carry only names the cluster declared.
    for (request, field) in [
        (json!({"profile": "apiserver", "dns_names": ["login.microsoftonline.com"]}), "dns_names[0]"),
        (json!({"profile": "apiserver", "ip_addresses": ["10.0.0.1"]}), "ip_addresses[0]"),
        (json!({"profile": "etcd-server", "dns_names": ["etcd.evil.example"]}), "dns_names[0]"),
        (
            json!({"profile": "kubelet-serving", "common_name": "system:node:db-1", "dns_names": ["db-1"]}),
            "common_name",
        ),
    ] {
        let problem =
            server.json(Method::POST, &component("named"), Some(&admin), Some(request.clone()), 403).await;
        assert_eq!(problem["rule"], "declared_names", "{request}");
        assert_eq!(problem["field"], field, "{request}");
    }
    assert_eq!(certificate_count(&server, &admin).await, before, "a refusal recorded a certificate");

    // Only an admin widens the privileged part of a policy.
    let widen = json!({"policy": {"allowed_privileged_groups": ["system:masters"]}});
    let problem =
        server.json(Method::PATCH, "/v1/clusters/default", Some(&writer), Some(widen.clone()), 403).await;
    assert_eq!(problem["rule"], "privileged_policy");
    let profiles_patch = json!({"policy": {"allowed_profiles": ["admin"]}});
    server.json(Method::PATCH, "/v1/clusters/default", Some(&writer), Some(profiles_patch), 403).await;
    server
        .json(
            Method::PATCH,
            "/v1/clusters/default",
            Some(&writer),
            Some(json!({"policy": {"node_names": ["w-*"]}})),
            200,
        )
        .await;

    // What the policy names, an admin of the cluster obtains.
    for profile in profiles.as_array().unwrap() {
        let issued = server
            .json(Method::POST, &component("named"), Some(&admin), Some(component_request(profile)), 201)
            .await;
        assert_eq!(issued["profile"], profile["name"]);
    }
    for group in PRIVILEGED_GROUPS {
        let body = json!({"user": "alice", "groups": [group]});
        let issued =
            server.json(Method::POST, "/v1/clusters/named/kubeconfigs", Some(&admin), Some(body), 201).await;
        let cert = parse_certificate(issued["certificate_pem"].as_str().unwrap());
        assert!(cert.tbs_certificate.subject.to_string().contains(group), "{group}");
    }
    server
        .json(
            Method::POST,
            "/v1/clusters/named/kubeconfigs",
            Some(&admin),
            Some(json!({"user": "system:kube-proxy"})),
            201,
        )
        .await;
    server.json(Method::PATCH, "/v1/clusters/default", Some(&admin), Some(widen), 200).await;
}
