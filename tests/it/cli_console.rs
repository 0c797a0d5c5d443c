//! The operator's console commands of `kca` (`clusters update`, `authorities`, `certificates
//! issue`, `audit`, `kubeconfig -n`, one meaning for `-o`), run as the real binary against a real
//! server on both backends; and exec credentials that notice a revocation, under real kubectl.

use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{Kca, certificates_of, detail, mode};
use crate::common::*;
use crate::kubeconfigs::serving_certificate;
use crate::mtls;
use kca::pki::AuthorityKind;
use kca::token::Scope;

crate::on_both_backends!(the_console_commands_update_issue_rotate_retire_and_audit);

async fn the_console_commands_update_issue_rotate_retire_and_audit(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    let kca = Kca::new(&server, Some(&admin));

    // clusters update: server, labels, policy fields and access rules, in one patch.
    let updated = kca
        .json(&[
            "clusters",
            "update",
            "prod",
            "--server",
            "https://new.example:6443",
            "--label",
            "env=prod",
            "--label",
            "tier=1",
            "--max-ttl",
            "2h",
            "--allowed-group",
            "dev",
            "--allowed-group",
            "ops",
            "--allowed-profile",
            "etcd-peer",
            "--control-plane-name",
            "m0.etcd.local",
            "--control-plane-name",
            "127.0.0.1",
            "--access-rule",
            "platform=dev,ops,max-ttl=1h",
            "--access-rule",
            "contractors=ops",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(updated, server.json(Method::GET, "/v1/clusters/prod", Some(&admin), None, 200).await);
    assert_eq!(updated["server"], "https://new.example:6443");
    assert_eq!(updated["labels"], json!({"env": "prod", "tier": "1"}));
    let policy = &updated["policy"];
    assert_eq!(policy["max_ttl_seconds"], 7200);
    assert_eq!(policy["allowed_groups"], json!(["dev", "ops"]));
    assert_eq!(policy["allowed_profiles"], json!(["etcd-peer"]));
    assert_eq!(
        policy["access_rules"],
        json!([{"idp_group": "platform", "groups": ["dev", "ops"], "max_ttl_seconds": 3600},
               {"idp_group": "contractors", "groups": ["ops"]}])
    );
    // The rest stays: a rule is replaced by its IdP group, another removed, a label dropped.
    let text = kca
        .ok(&[
            "clusters",
            "update",
            "prod",
            "--access-rule",
            "platform=dev",
            "--remove-access-rule",
            "contractors",
            "--remove-label",
            "tier",
        ])
        .await;
    assert!(text.lines().any(|l| l.starts_with("labels:") && l.ends_with(" env=prod")), "{text}");
    let prod = server.json(Method::GET, "/v1/clusters/prod", Some(&admin), None, 200).await;
    assert_eq!(prod["policy"]["access_rules"], json!([{"idp_group": "platform", "groups": ["dev"]}]));
    assert_eq!(prod["policy"]["max_ttl_seconds"], 7200);
    assert_eq!(prod["server"], "https://new.example:6443");
    // Refusals: the server's detail, and nothing changes.
    let refused = json!({"policy": {"min_ttl_seconds": 3 * 3600}});
    let expected = detail(&server, Method::PATCH, "/v1/clusters/prod", &admin, Some(refused)).await;
    let err = kca.fails(&["clusters", "update", "prod", "--min-ttl", "3h"]).await;
    assert!(err.contains(&expected), "{err}");
    assert!(kca.fails(&["clusters", "update", "prod"]).await.contains("nothing to change"));
    assert!(kca.fails(&["clusters", "update", "prod", "--remove-access-rule", "x"]).await.contains("\"x\""));
    let reader = Kca::new(&server, Some(&server.token(&[Scope::Read]).await));
    assert!(reader.fails(&["clusters", "update", "prod", "--max-ttl", "1h"]).await.starts_with("kca: "));
    assert_eq!(server.json(Method::GET, "/v1/clusters/prod", Some(&admin), None, 200).await, prod);

    // certificates issue: a component certificate from a key made here, files 0600.
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "certificates",
        "issue",
        "prod",
        "etcd-peer",
        "--cn",
        "m0",
        "--dns-name",
        "m0.etcd.local",
        "--ip",
        "127.0.0.1",
        "--dir",
    ];
    let dir_arg = dir.path().join("pki").display().to_string();
    let issued = kca.json(&[&args[..], &[dir_arg.as_str(), "-o", "json"]].concat()).await;
    let (cert_file, key_file) = (dir.path().join("pki/etcd-peer.crt"), dir.path().join("pki/etcd-peer.key"));
    assert_eq!((mode(&cert_file), mode(&key_file)), (0o600, 0o600));
    assert_eq!(std::fs::read_to_string(&cert_file).unwrap(), issued["certificate_pem"].as_str().unwrap());
    assert!(issued["private_key_pem"].is_null(), "the key never crossed the network");
    assert_eq!(
        run_ok("openssl", &["pkey", "-in", key_file.to_str().unwrap(), "-pubout"]),
        run_ok("openssl", &["x509", "-in", cert_file.to_str().unwrap(), "-noout", "-pubkey"])
    );
    let text = run_ok("openssl", &["x509", "-in", cert_file.to_str().unwrap(), "-noout", "-text"]);
    assert!(text.contains("DNS:m0.etcd.local") && text.contains("IP Address:127.0.0.1"), "{text}");
    let peer_serial = issued["serial"].as_str().unwrap().to_string();
    assert!(kca.fails(&[&args[..], &[dir_arg.as_str()]].concat()).await.contains("--force"));
    let base = dir.path().join("other").display().to_string();
    let err = kca.fails(&["certificates", "issue", "prod", "apiserver", "--file", &base]).await;
    assert!(err.contains("allowed_profiles") || err.contains("apiserver"), "{err}");
    assert!(!dir.path().join("other.key").exists(), "no key is left for a refused certificate");

    // kubeconfig -n names the cluster and context; -o is the format; -o FILE still works, warned.
    let yaml = kca.ok(&["kubeconfig", "prod", "alice", "-g", "dev", "-n", "work"]).await;
    let parsed: serde_norway::Value = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(parsed["current-context"], "work");
    assert_eq!(parsed["contexts"][0]["name"], "work");
    assert_eq!(parsed["contexts"][0]["context"]["cluster"], "work");
    assert_eq!(parsed["clusters"][0]["name"], "work");
    assert_eq!(parsed["contexts"][0]["context"]["user"], parsed["users"][0]["name"]);
    let as_json = kca.json(&["kubeconfig", "prod", "alice", "-g", "dev", "-o", "json"]).await;
    assert_eq!(as_json["current-context"], "alice@prod");
    let old = dir.path().join("old.yaml");
    let ran = kca.run(&["kubeconfig", "prod", "alice", "-g", "dev", "-o", old.to_str().unwrap()]).await;
    assert!(ran.success && ran.stdout.is_empty(), "{}", ran.stderr);
    assert!(ran.stderr.contains("deprecated") && ran.stderr.contains("--file"), "{}", ran.stderr);
    assert_eq!(mode(&old), 0o600);
    let file = dir.path().join("new.yaml");
    let ran = kca.run(&["kubeconfig", "prod", "alice", "-g", "dev", "--file", file.to_str().unwrap()]).await;
    assert!(ran.success && !ran.stderr.contains("deprecated"), "{}", ran.stderr);
    let authority = kca.json(&["authority-cert", "prod", "operators", "-o", "json"]).await;
    assert_eq!(authority["kind"], "operators");

    // authorities list, rotate (etcd: no offer to retire), retire (refused while it vouches for the
    // etcd-peer certificate, then forced).
    let table = kca.ok(&["authorities", "list", "prod"]).await;
    assert_eq!(table.lines().count(), 6, "{table}");
    assert!(table.lines().skip(1).all(|l| l.contains(" 1* ") && l.contains("active")), "{table}");
    let ran = kca.run(&["authorities", "rotate", "prod", "etcd", "-o", "json"]).await;
    assert!(ran.success, "{}", ran.stderr);
    assert!(ran.stderr.contains("kca authorities retire prod etcd 1"), "{}", ran.stderr);
    let rotated: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(rotated["generation"], 2);
    let states: Vec<(i64, &str)> = rotated["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["generation"].as_i64().unwrap(), g["state"].as_str().unwrap()))
        .collect();
    assert!(states.contains(&(1, "retiring")) && states.contains(&(2, "active")), "{states:?}");
    let err = kca.fails(&["authorities", "retire", "prod", "etcd"]).await;
    assert!(err.contains("--force"), "{err}");
    let retired = kca.json(&["authorities", "retire", "prod", "etcd", "--force", "-o", "json"]).await;
    assert_eq!(retired["generations"].as_array().unwrap().len(), 1);
    assert_eq!(retired["generations"][0]["generation"], 2);
    let peer = server
        .json(Method::GET, &format!("/v1/clusters/prod/certificates/{peer_serial}"), Some(&admin), None, 200)
        .await;
    assert_eq!(peer["status"], "revoked");
    assert!(kca.fails(&["authorities", "retire", "prod", "etcd"]).await.contains("no retiring generation"));
    assert!(kca.fails(&["authorities", "rotate", "prod", "bogus"]).await.contains("valid kinds"));

    // audit: filtered by cluster, action (prefix), actor and time; newest first.
    let updates = kca.json(&["audit", "--cluster", "prod", "--action", "cluster.update", "-o", "json"]).await;
    let updates = updates.as_array().unwrap();
    assert_eq!(updates.len(), 2, "{updates:?}");
    let actor = updates[0]["actor"].as_str().unwrap().to_string();
    assert!(updates[0]["at"].as_str() >= updates[1]["at"].as_str());
    let all = kca.json(&["audit", "--since", "1h", "-o", "json", "--limit", "0"]).await;
    let actions: Vec<&str> = all.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for wanted in ["cluster.create", "cluster.update", "authority.rotate", "authority.retire"] {
        assert!(actions.contains(&wanted), "{wanted} in {actions:?}");
    }
    let certs = kca.json(&["audit", "--action", "certificate.*", "--actor", &actor, "-o", "json"]).await;
    assert!(!certs.as_array().unwrap().is_empty());
    assert!(
        certs.as_array().unwrap().iter().all(|e| e["action"].as_str().unwrap().starts_with("certificate."))
    );
    assert_eq!(kca.json(&["audit", "--actor", "nobody", "-o", "json"]).await, json!([]));
    let future = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert_eq!(kca.json(&["audit", "--since", &future, "-o", "json"]).await, json!([]));
    assert_eq!(kca.json(&["audit", "--limit", "1", "-o", "json"]).await.as_array().unwrap().len(), 1);
    let table = kca.ok(&["audit", "--cluster", "prod", "--action", "authority.*"]).await;
    assert!(table.starts_with("AT") && table.lines().count() == 3, "{table}");
    assert!(reader.fails(&["audit"]).await.starts_with("kca: "));
}

/// kubectl through the `--exec` kubeconfig; after `kca revoke-user`, the next call presents a new
/// certificate, never the revoked one; once the user may no longer have one, a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_cached_exec_credential_is_not_served_again() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    let listener = mtls::bind().await;
    let apiserver_url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let body = json!({"name": "prod", "server": apiserver_url});
    server.json(Method::POST, "/v1/clusters", Some(&admin), Some(body), 201).await;
    let (cert, key) = serving_certificate(&server, "prod", AuthorityKind::ControlPlane).await;
    let operators =
        server.json(Method::GET, "/v1/clusters/prod/authorities/operators", None, None, 200).await;
    let apiserver = mtls::serve(listener, &cert, &key, operators["certificate_pem"].as_str().unwrap());

    let kca = Kca::new(&server, Some(&server.token(&[Scope::KubeconfigsIssue]).await));
    let admin_cli = Kca::new(&server, Some(&admin));
    let file = kca.home.path().join("kube/config");
    kca.ok(&[
        "kubeconfig",
        "prod",
        "alice",
        "-g",
        "dev",
        "--exec",
        "--server",
        &apiserver_url,
        "--file",
        file.to_str().unwrap(),
    ])
    .await;
    let kubectl = |env: Vec<(String, String)>| {
        let file = file.clone();
        tokio::task::spawn_blocking(move || {
            Command::new("kubectl")
                .args(["--kubeconfig", file.to_str().unwrap(), "get", "--raw", "/version"])
                .env_clear()
                .envs(env)
                .output()
                .unwrap()
        })
    };
    let presented = || apiserver.peers.lock().unwrap().iter().map(|p| p.serial.clone()).collect::<Vec<_>>();

    // Issued once, then served from the cache (the revoked list is read and does not name it).
    for _ in 0..2 {
        let output = kubectl(kca.env.clone()).await.unwrap();
        assert!(output.status.success(), "kubectl: {}", String::from_utf8_lossy(&output.stderr));
    }
    let first = presented();
    assert!(first.len() >= 2 && first.iter().all(|s| *s == first[0]), "{first:?}");
    assert_eq!(certificates_of(&server, &admin, "alice").await.len(), 1);

    // Revoked: the next kubectl call gets a new certificate, and never shows the old one again.
    // (The revoked list kept by the previous call is at most 15 s old: wait it out, as a user
    // whose certificate is revoked between two commands would.)
    tokio::time::sleep(std::time::Duration::from_secs(16)).await;
    admin_cli.ok(&["revoke-user", "prod", "alice"]).await;
    let seen = presented().len();
    let output = kubectl(kca.env.clone()).await.unwrap();
    assert!(output.status.success(), "kubectl: {}", String::from_utf8_lossy(&output.stderr));
    let after: Vec<String> = presented()[seen..].to_vec();
    assert!(!after.is_empty() && !after.contains(&first[0]), "{after:?} after revoking {}", first[0]);
    let issued = certificates_of(&server, &admin, "alice").await;
    assert_eq!(issued.len(), 2);
    assert!(issued.iter().any(|c| c["serial"] == after[0].as_str() && c["status"] == "active"));

    // The policy no longer lets alice have `dev`; revoked again: kubectl fails, saying why.
    tokio::time::sleep(std::time::Duration::from_secs(16)).await;
    admin_cli.ok(&["clusters", "update", "prod", "--allowed-group", "ops"]).await;
    admin_cli.ok(&["revoke-user", "prod", "alice"]).await;
    let seen = presented().len();
    let output = kubectl(kca.env.clone()).await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("was revoked, and a new one was refused"), "{stderr}");
    assert!(stderr.contains("allowed_groups"), "{stderr}");
    assert_eq!(presented().len(), seen, "the revoked certificate was not presented");
}
