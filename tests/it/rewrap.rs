//! Changing the master key under load: `kca keys rewrap` while two replicas on one Postgres issue,
//! revoke and serve CRLs; no request fails; after a restart with only the new key everything
//! opens, and once the previous copies are dropped the old key opens nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::common::*;
use crate::replicas::{Deployment, Replica};

/// Issue (and now and then revoke, and fetch CRLs) through both replicas until `done`; answers
/// the number of requests that went through and the failures, with what they answered.
async fn load(
    deployment: Arc<Deployment>,
    replicas: [Arc<Replica>; 2],
    token: String,
    worker: usize,
    done: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut i = worker;
    while !done.load(Ordering::SeqCst) {
        i += 1;
        let replica = &replicas[i % 2];
        let cluster = ["one", "two"][(i / 2) % 2];
        let path = format!("/v1/clusters/{cluster}/kubeconfigs");
        let (status, issued) =
            deployment.post(replica, &path, &token, json!({"user": format!("w{worker}-{i}")})).await;
        if status != 201 {
            failures.push(format!("issue on {cluster}: {status} {issued}"));
            continue;
        }
        if i.is_multiple_of(5) {
            let serial = issued["serial"].as_str().unwrap_or_default();
            let path = format!("/v1/clusters/{cluster}/certificates/{serial}/revoke");
            let (status, body) = deployment.post(&replicas[(i + 1) % 2], &path, &token, json!({})).await;
            if status != 200 {
                failures.push(format!("revoke on {cluster}: {status} {body}"));
            }
        }
        if deployment.crl(replica, cluster).await.is_none() {
            failures.push(format!("CRL of {cluster}"));
        }
        served.fetch_add(1, Ordering::SeqCst);
    }
    failures
}

fn assert_success(output: &std::process::Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "{what} failed: {stderr}");
    stderr
}

async fn rewrap(deployment: &Arc<Deployment>, new_key: &std::path::Path) -> String {
    let (deployment, new_key) = (deployment.clone(), new_key.display().to_string());
    let output = tokio::task::spawn_blocking(move || {
        deployment.host_command(
            &["keys", "rewrap"],
            &["--new-master-key-file", &new_key, "--new-master-key-version", "2"],
        )
    })
    .await
    .unwrap();
    assert_success(&output, "kca keys rewrap")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_key_rewrap_under_load_fails_no_request_and_the_new_key_alone_opens_everything() {
    let database = PgDatabase::create();
    let deployment = Arc::new(Deployment::new(database.url.clone()));
    let a = Arc::new(deployment.start_replica("a", &[]).await);
    let b = Arc::new(deployment.start_replica("b", &[]).await);
    let token = deployment.token("admin");
    for (name, replica) in [("one", &a), ("two", &b)] {
        let (status, body) = deployment
            .post(replica, "/v1/clusters", &token, json!({"name": name, "server": "https://k:6443"}))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let new_key = deployment.dir.path().join("master-v2.key");
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    std::fs::write(&new_key, bytes).unwrap();

    // Four clients load both replicas; the rewrap runs in the middle of it.
    let (done, served) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(load(
                deployment.clone(),
                [a.clone(), b.clone()],
                token.clone(),
                w,
                done.clone(),
                served.clone(),
            ))
        })
        .collect();
    let wait_for = |count: usize| {
        let served = served.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while served.load(Ordering::SeqCst) < count {
                assert!(std::time::Instant::now() < deadline, "the load stalled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(40).await;
    let first = rewrap(&deployment, &new_key).await;
    assert!(first.contains("10 CA keys, 1 token signing keys, the master key check"), "{first}");
    let after_rewrap = served.load(Ordering::SeqCst);

    // Replicas still on the previous key keep working after the rewrap, and make new keys: a
    // rotated CA, a new token signing key and a token it signs. A second rewrap seals those.
    let (status, body) =
        deployment.post(&a, "/v1/clusters/one/authorities/operators/rotate", &token, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = deployment.post(&b, "/v1/token-keys/rotate", &token, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, minted) = deployment
        .post(&b, "/v1/tokens", &token, json!({"subject": "late", "scopes": ["admin"], "ttl_seconds": 3600}))
        .await;
    assert_eq!(status, 201, "{minted}");
    let late_token = minted["token"].as_str().unwrap().to_string();
    wait_for(after_rewrap + 40).await;
    let second = rewrap(&deployment, &new_key).await;
    assert!(second.contains(": 1 CA keys, 1 token signing keys;"), "{second}");
    wait_for(served.load(Ordering::SeqCst) + 20).await;
    done.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    for worker in workers {
        failures.extend(worker.await.unwrap());
    }
    let total = served.load(Ordering::SeqCst);
    assert!(failures.is_empty(), "{} of {total} rounds failed: {failures:?}", failures.len());
    println!("{total} rounds of issue (+ revoke every fifth) + CRL through two replicas, none failed");

    // Restarted with the new key only: every CA signs (the rotated one too), every token
    // verifies (the late one, signed by the key added after the first rewrap, too).
    drop((a, b));
    deployment.switch_master_key(new_key.clone(), 2);
    let a = deployment.start_replica("a2", &[]).await;
    let b = deployment.start_replica("b2", &[]).await;
    for replica in [&a, &b] {
        for cluster in ["one", "two"] {
            for bearer in [&token, &late_token] {
                let path = format!("/v1/clusters/{cluster}/kubeconfigs");
                let (status, issued) =
                    deployment.post(replica, &path, bearer, json!({"user": "after"})).await;
                assert_eq!(status, 201, "{issued}");
            }
            let (status, body) = deployment
                .post(
                    replica,
                    &format!("/v1/clusters/{cluster}/authorities/kubelet/rotate"),
                    &token,
                    json!({}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    }

    // Once every replica runs the new key, the previous copies go; the old key opens nothing.
    let output = deployment.host_command(&["keys", "drop-previous"], &[]);
    let dropped = assert_success(&output, "kca keys drop-previous");
    assert!(
        dropped.contains("dropped the previous copies of 11 CA keys and 2 token signing keys"),
        "{dropped}"
    );
    let previous = run_ok(
        "psql",
        &[
            &database.url,
            "-tAc",
            "SELECT (SELECT count(*) FROM authorities WHERE previous_sealed_key IS NOT NULL) + \
             (SELECT count(*) FROM token_keys WHERE previous_sealed_key IS NOT NULL) + \
             (SELECT count(*) FROM settings WHERE key = 'master_key_check:previous')",
        ],
    );
    assert_eq!(previous.trim(), "0");
    let mut args = serve_args(&deployment.dir.path().join("check"), Some(database.url.clone()));
    args.store.master_key_file = Some(new_key);
    args.store.master_key_version = 2;
    let (store, keyring, _) = kca::app::open_store_and_keys(&args.store).await.unwrap();
    let mut opened = 0;
    for cluster in ["one", "two"] {
        let cluster = store.find_cluster(cluster).await.unwrap();
        for authority in store.list_authorities(cluster.id).await.unwrap() {
            assert_eq!(authority.key_version, 2);
            keyring.signer(&authority).unwrap();
            opened += 1;
        }
    }
    assert_eq!(opened, 15, "10 first generations, 5 rotations");
    deployment.switch_master_key(deployment.dir.path().join("master.key"), 1);
    let output = deployment.host_command(&["token", "create"], &["--subject", "x", "--scope", "read"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("master key does not open the keys sealed in this database"), "{stderr}");

    // The trail says who changed the master key, and when.
    let audited = run_ok(
        "psql",
        &[
            &database.url,
            "-tAc",
            "SELECT action, actor FROM audit_events WHERE action LIKE 'keys.%' ORDER BY id",
        ],
    );
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    assert_eq!(
        audited.trim(),
        format!("keys.rewrap|host:{user}\nkeys.rewrap|host:{user}\nkeys.drop_previous|host:{user}")
    );
    drop((a, b));
    drop(database);
}
