//! Component certificates: every profile against pkilint and rustls-webpki, and a real etcd
//! cluster formed, used (etcdctl and its gRPC gateway) and guarded with them.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;
use crate::kubeconfigs::webpki_verify;
use kca::token::Scope;

/// Lint a certificate; answers the findings at WARNING and above, except the one the Kubernetes
/// table makes unavoidable: single-label DNS names (`kubernetes`, `localhost`) in the SAN.
fn pkilint_component(pem: &str, dir: &std::path::Path) -> Vec<String> {
    let findings = crate::lint::pkilint("lint_pkix_cert", &[], pem, dir);
    let lines: Vec<&str> = findings.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let mut kept = Vec::new();
    for pair in lines.chunks(2) {
        let single_label = pair.len() == 2
            && pair[1].starts_with("pkix.invalid_domain_name_syntax (ERROR): Invalid domain name syntax:")
            && !pair[1].rsplit(':').next().unwrap().contains('.');
        if !single_label {
            kept.push(pair.join(" "));
        }
    }
    kept
}

async fn issue(server: &TestServer, token: &str, body: Value, expect: u16) -> Value {
    server.json(Method::POST, "/v1/clusters/prod/certificates", Some(token), Some(body), expect).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_profile_is_lint_clean_and_fit_for_its_usage_only() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    let issuer = admin.clone();
    server.create_component_cluster(&admin, "prod").await;
    // super-admin carries system:masters: refused until the policy allows it.
    let problem = issue(&server, &issuer, json!({"profile": "super-admin"}), 403).await;
    assert_eq!(problem["rule"], "allow_system_masters");
    let allow = json!({"policy": {"allow_system_masters": true}});
    server.json(Method::PATCH, "/v1/clusters/prod", Some(&admin), Some(allow), 200).await;
    let dir = tempfile::tempdir().unwrap();
    let profiles = server.json(Method::GET, "/v1/profiles", None, None, 200).await;
    let profiles = profiles.as_array().unwrap();
    assert_eq!(profiles.len(), 13);
    for profile in profiles {
        let name = profile["name"].as_str().unwrap();
        let mut request = json!({"profile": name});
        if profile["common_name"]["rule"] == "node" {
            request["common_name"] = json!("system:node:worker-1");
        }
        if profile["subject_alt_names"] == "required" {
            request["dns_names"] = json!(["node-1.example.com"]);
            request["ip_addresses"] = json!(["10.0.0.7"]);
        }
        if name == "apiserver" {
            request["dns_names"] = json!(["api.example.com"]);
        }
        let issued = issue(&server, &issuer, request, 201).await;
        let cert = issued["certificate_pem"].as_str().unwrap();
        let bundle = issued["ca_pem"].as_str().unwrap();
        let usages: Vec<&str> =
            profile["extended_key_usages"].as_array().unwrap().iter().map(|u| u.as_str().unwrap()).collect();
        let server_ok = webpki_verify(cert, bundle, false).is_ok();
        let client_ok = webpki_verify(cert, bundle, true).is_ok();
        assert_eq!(server_ok, usages.contains(&"server_auth"), "{name}: server auth");
        assert_eq!(client_ok, usages.contains(&"client_auth"), "{name}: client auth");
        // Not valid under another CA of the cluster.
        let other = if profile["authority"] == "etcd" { "kubelet" } else { "etcd" };
        let (_, _, other_bundle) = server
            .send(Method::GET, &format!("/v1/clusters/prod/authorities/{other}/ca.pem"), None, None)
            .await;
        assert!(webpki_verify(cert, &other_bundle, client_ok).is_err(), "{name} under the {other} CA");
        assert_eq!(pkilint_component(cert, dir.path()), Vec::<String>::new(), "{name}");
        let record = server
            .json(
                Method::GET,
                &format!("/v1/clusters/prod/certificates/{}", issued["serial"].as_str().unwrap()),
                Some(&admin),
                None,
                200,
            )
            .await;
        assert_eq!(record["profile"], name);
        assert_eq!(record["kind"], profile["authority"]);
        let lifetime = (time::OffsetDateTime::parse(
            issued["not_after"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
            - time::OffsetDateTime::parse(
                issued["not_before"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap())
        .whole_days();
        assert_eq!(lifetime, 365, "{name}: a year by default");
    }

    // Fields a profile forbids are refused (422), and nothing is recorded for them.
    for (request, field) in [
        (json!({"profile": "scheduler", "common_name": "root"}), "common_name"),
        (json!({"profile": "scheduler", "organizations": ["system:masters"]}), "organizations"),
        (json!({"profile": "front-proxy-client", "dns_names": ["x.example"]}), "dns_names"),
        (json!({"profile": "kubelet-client", "common_name": "worker-1"}), "common_name"),
        (json!({"profile": "etcd-server"}), "dns_names"),
        (json!({"profile": "etcd-server", "dns_names": ["a"], "ttl_seconds": 100_000_000}), "ttl_seconds"),
        (json!({"profile": "nope"}), "profile"),
    ] {
        let problem = issue(&server, &issuer, request, 422).await;
        assert_eq!(problem["field"], field);
    }
    let listed =
        server.json(Method::GET, "/v1/clusters/prod/certificates?limit=500", Some(&admin), None, 200).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 13);
    // Every component profile is privileged: no other scope reaches one.
    for scope in [Scope::KubeconfigsIssue, Scope::CertificatesIssue, Scope::ClustersWrite] {
        let token = server.token(&[scope]).await;
        let problem = issue(&server, &token, json!({"profile": "scheduler"}), 403).await;
        assert_eq!(problem["rule"], "privileged_identity");
    }
    server.transcript.assert_no_private_key_except("/certificates");
}

/// Kill on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Write a certificate and its key; answers the two paths.
fn write_pair(dir: &std::path::Path, name: &str, issued: &Value) -> (String, String) {
    let cert = temp_file(dir, &format!("{name}.pem"), issued["certificate_pem"].as_str().unwrap().as_bytes());
    let key = temp_file(dir, &format!("{name}.key"), issued["private_key_pem"].as_str().unwrap().as_bytes());
    (cert.to_str().unwrap().to_string(), key.to_str().unwrap().to_string())
}

fn etcdctl(endpoints: &str, ca: &str, cert: &str, key: &str, args: &[&str]) -> std::process::Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            endpoints,
            "--cacert",
            ca,
            "--cert",
            cert,
            "--key",
            key,
            "--dial-timeout",
            "3s",
            "--command-timeout",
            "5s",
        ])
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_etcd_cluster_forms_and_guards_itself_with_kca_certificates() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_component_cluster(&admin, "prod").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let (_, _, etcd_ca) =
        server.send(Method::GET, "/v1/clusters/prod/authorities/etcd/ca.pem", None, None).await;
    let ca_file = temp_file(path, "etcd-ca.pem", etcd_ca.as_bytes());
    let ca_file = ca_file.to_str().unwrap();

    // The clients: a good one, one to revoke, one from another CA.
    let good = issue(&server, &admin, json!({"profile": "apiserver-etcd-client"}), 201).await;
    let revoked = issue(&server, &admin, json!({"profile": "apiserver-etcd-client"}), 201).await;
    let foreign = issue(&server, &admin, json!({"profile": "controller-manager"}), 201).await;
    let revoke = format!("/v1/clusters/prod/certificates/{}/revoke", revoked["serial"].as_str().unwrap());
    server.json(Method::POST, &revoke, Some(&admin), Some(json!({"reason": "keyCompromise"})), 200).await;
    // --client-crl-file gets the etcd CA's own CRL alone.
    let (_, _, etcd_crl) =
        server.send(Method::GET, "/v1/clusters/prod/authorities/etcd/crl.pem", None, None).await;
    let crl_file = temp_file(path, "etcd-crl.pem", etcd_crl.as_bytes());

    let members: Vec<(String, u16, u16)> =
        (0..3).map(|i| (format!("m{i}"), free_port(), free_port())).collect();
    let initial_cluster = members
        .iter()
        .map(|(name, _, peer)| format!("{name}=https://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut processes = Vec::new();
    for (name, client, peer) in &members {
        let serving = issue(
            &server,
            &admin,
            json!({"profile": "etcd-server", "common_name": name, "dns_names": [format!("{name}.etcd.local")], "ip_addresses": ["127.0.0.1"]}),
            201,
        )
        .await;
        let peering = issue(
            &server,
            &admin,
            json!({"profile": "etcd-peer", "common_name": name, "dns_names": [format!("{name}.etcd.local")], "ip_addresses": ["127.0.0.1"]}),
            201,
        )
        .await;
        let (server_cert, server_key) = write_pair(path, &format!("{name}-server"), &serving);
        let (peer_cert, peer_key) = write_pair(path, &format!("{name}-peer"), &peering);
        let log = std::fs::File::create(path.join(format!("{name}.log"))).unwrap();
        let child = Command::new("etcd")
            .args(["--name", name, "--data-dir"])
            .arg(path.join(format!("{name}.data")))
            .args(["--listen-client-urls", &format!("https://127.0.0.1:{client}")])
            .args(["--advertise-client-urls", &format!("https://127.0.0.1:{client}")])
            .args(["--listen-peer-urls", &format!("https://127.0.0.1:{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("https://127.0.0.1:{peer}")])
            .args([
                "--initial-cluster",
                &initial_cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "kca-test",
            ])
            .args([
                "--cert-file",
                &server_cert,
                "--key-file",
                &server_key,
                "--client-cert-auth",
                "--trusted-ca-file",
                ca_file,
            ])
            .args(["--client-crl-file", crl_file.to_str().unwrap()])
            .args(["--peer-cert-file", &peer_cert, "--peer-key-file", &peer_key, "--peer-client-cert-auth"])
            .args(["--peer-trusted-ca-file", ca_file])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("etcd (apt-get install etcd-server etcd-client)");
        processes.push(Process(child));
    }
    let endpoints = members
        .iter()
        .map(|(_, client, _)| format!("https://127.0.0.1:{client}"))
        .collect::<Vec<_>>()
        .join(",");
    let (good_cert, good_key) = write_pair(path, "good", &good);

    // The cluster forms over mutual TLS between peers.
    let mut healthy = false;
    for _ in 0..60 {
        let health = etcdctl(&endpoints, ca_file, &good_cert, &good_key, &["endpoint", "health"]);
        if health.status.success() {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let logs = || {
        (0..3)
            .map(|i| std::fs::read_to_string(path.join(format!("m{i}.log"))).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(healthy, "etcd did not become healthy:\n{}", logs());
    let list = etcdctl(&endpoints, ca_file, &good_cert, &good_key, &["member", "list"]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).lines().filter(|l| l.contains("started")).count(), 3);

    // apiserver-etcd-client writes and reads.
    let put = etcdctl(&endpoints, ca_file, &good_cert, &good_key, &["put", "/kca/test", "hello"]);
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let get =
        etcdctl(&endpoints, ca_file, &good_cert, &good_key, &["get", "/kca/test", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "hello");

    // etcd's gRPC gateway (HTTP/JSON on the client port) dials etcd itself with the serving
    // certificate: without clientAuth in etcd-server, this answers 503 ("write: broken pipe").
    let first_client = format!("https://127.0.0.1:{}", members[0].1);
    let range = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--max-time", "10", "--cacert", ca_file])
        .args(["--cert", &good_cert, "--key", &good_key])
        .args(["-X", "POST", &format!("{first_client}/v3/kv/range")])
        .args(["-H", "Content-Type: application/json", "-d", r#"{"key": "L2tjYS90ZXN0"}"#])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&range.stdout);
    assert!(range.status.success(), "gRPC gateway: {body} {}", String::from_utf8_lossy(&range.stderr));
    let answer: Value = serde_json::from_str(&body).unwrap();
    // "aGVsbG8=" is base64 of "hello".
    assert_eq!(answer["kvs"][0]["value"], "aGVsbG8=", "{body}");
    let health = etcdctl(&first_client, ca_file, &good_cert, &good_key, &["endpoint", "health"]);
    assert!(health.status.success(), "{}", String::from_utf8_lossy(&health.stderr));

    // A client certificate from another CA, and a revoked one, are refused.
    for (name, issued) in [("foreign", &foreign), ("revoked", &revoked)] {
        let (cert, key) = write_pair(path, name, issued);
        let refused = etcdctl(&endpoints, ca_file, &cert, &key, &["get", "/kca/test"]);
        assert!(!refused.status.success(), "{name} client was let in");
    }
    let log = logs();
    assert!(log.contains("revoked"), "etcd logged the revoked serial:\n{log}");
    drop(processes);
}
