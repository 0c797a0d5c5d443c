//! Several `kca serve` processes on one Postgres behave as one service: CRL numbers never go
//! back, every revocation reaches every replica's CRL, and a replica killed mid-load loses
//! nothing it handed out.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;
use crate::revocation::crl_facts;

/// A `kca serve` process; killed on drop.
pub struct Replica {
    pub url: String,
    child: Child,
    pub log: PathBuf,
}

impl Replica {
    /// SIGKILL: no graceful shutdown, no flushing.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What replicas share: one database, one master key, one serving certificate.
pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub database_url: String,
    /// The master key file replicas and host commands start with, and its version.
    master_key: Mutex<(PathBuf, i32)>,
    cert: PathBuf,
    key: PathBuf,
    pub client: reqwest::Client,
}

impl Deployment {
    pub fn new(database_url: String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let master_key = dir.path().join("master.key");
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).unwrap();
        std::fs::write(&master_key, bytes).unwrap();
        let (cert, key, _) = kca::devcert::ensure(dir.path()).unwrap();
        let client = client_trusting(&cert);
        Self { dir, database_url, master_key: Mutex::new((master_key, 1)), cert, key, client }
    }

    /// Replicas and host commands started from now on use this master key.
    pub fn switch_master_key(&self, path: PathBuf, version: i32) {
        *self.master_key.lock().unwrap() = (path, version);
    }

    pub fn common_args(&self, data_dir: &Path) -> Vec<String> {
        let (master_key, version) = self.master_key.lock().unwrap().clone();
        vec![
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--database-url".into(),
            self.database_url.clone(),
            "--master-key-file".into(),
            master_key.display().to_string(),
            "--master-key-version".into(),
            version.to_string(),
        ]
    }

    /// Run a `kca` command on the server host (`token`, `keys`, ...), with this deployment's
    /// database and master key after `args`' subcommand words.
    pub fn host_command(&self, subcommand: &[&str], args: &[&str]) -> std::process::Output {
        let data_dir = self.dir.path().join("operator");
        Command::new(env!("CARGO_BIN_EXE_kca"))
            .args(subcommand)
            .args(self.common_args(&data_dir))
            .args(args)
            .output()
            .unwrap()
    }

    /// Mint a token the way an operator does on a server host.
    pub fn token(&self, scope: &str) -> String {
        let data_dir = self.dir.path().join("operator");
        let mut args: Vec<String> = vec!["token".into(), "create".into()];
        args.extend(self.common_args(&data_dir));
        args.extend(["--subject".into(), "load".into(), "--scope".into(), scope.into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_ok(env!("CARGO_BIN_EXE_kca"), &args).trim().to_string()
    }

    /// Start a replica and wait until it is ready.
    pub async fn start_replica(&self, name: &str, extra_env: &[(&str, &str)]) -> Replica {
        let data_dir = self.dir.path().join(name);
        let port = free_port();
        let log = self.dir.path().join(format!("{name}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_kca"));
        command
            .arg("serve")
            .args(self.common_args(&data_dir))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert")
            .arg(&self.cert)
            .arg("--tls-key")
            .arg(&self.key)
            .env("KCA_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let child = command.spawn().unwrap();
        let replica = Replica { url: format!("https://127.0.0.1:{port}"), child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = self.client.get(format!("{}/readyz", replica.url)).send().await
                && response.status() == 200
            {
                return replica;
            }
            assert!(
                Instant::now() < deadline,
                "replica {name} did not become ready: {}",
                std::fs::read_to_string(&replica.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn post(
        &self,
        replica: &Replica,
        path: &str,
        token: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let response =
            self.client.post(format!("{}{path}", replica.url)).bearer_auth(token).json(&body).send().await;
        match response {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or(serde_json::Value::Null))
            }
            Err(_) => (0, serde_json::Value::Null),
        }
    }

    pub async fn crl(&self, replica: &Replica, cluster: &str) -> Option<(u64, Vec<String>)> {
        let url = format!("{}/v1/clusters/{cluster}/authorities/operators/crl", replica.url);
        let response = self.client.get(url).send().await.ok()?;
        (response.status() == 200).then_some(())?;
        Some(crl_facts(&response.bytes().await.ok()?))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_revocations_and_crl_numbers_never_go_back() {
    let database = PgDatabase::create();
    let deployment = Arc::new(Deployment::new(database.url.clone()));
    let a = Arc::new(deployment.start_replica("a", &[]).await);
    let b = Arc::new(deployment.start_replica("b", &[]).await);
    let token = deployment.token("admin");
    let (status, _) = deployment
        .post(&a, "/v1/clusters", &token, json!({"name": "shared", "server": "https://k:6443"}))
        .await;
    assert_eq!(status, 201);

    // 500 certificates, issued through both replicas.
    let mut serials = Vec::new();
    for i in 0..500 {
        let replica = if i % 2 == 0 { &a } else { &b };
        let (status, issued) = deployment
            .post(replica, "/v1/clusters/shared/kubeconfigs", &token, json!({"user": format!("u{i}")}))
            .await;
        assert_eq!(status, 201, "{issued}");
        serials.push(issued["serial"].as_str().unwrap().to_string());
    }

    // A watcher samples both replicas' CRL numbers while 8 tasks revoke through both.
    let samples = Arc::new(Mutex::new(vec![Vec::new(), Vec::new()]));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (deployment, a, b, samples, done) =
            (deployment.clone(), a.clone(), b.clone(), samples.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                for (i, replica) in [&a, &b].into_iter().enumerate() {
                    if let Some((number, _)) = deployment.crl(replica, "shared").await {
                        samples.lock().unwrap()[i].push(number);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for (t, chunk) in serials.chunks(serials.len() / 8).enumerate() {
        let (deployment, a, b, token, chunk) =
            (deployment.clone(), a.clone(), b.clone(), token.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for (i, serial) in chunk.iter().enumerate() {
                let replica = if (t + i) % 2 == 0 { &a } else { &b };
                let path = format!("/v1/clusters/shared/certificates/{serial}/revoke");
                let (status, body) = deployment.post(replica, &path, &token, json!({})).await;
                assert_eq!(status, 200, "{body}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let revoked_at = Instant::now();

    // Both replicas serve a CRL with all 500, within the documented bound.
    let mut expected = serials.clone();
    expected.sort();
    for (name, replica) in [("a", &a), ("b", &b)] {
        loop {
            let (_, mut listed) = deployment.crl(replica, "shared").await.unwrap();
            listed.sort();
            if listed == expected {
                break;
            }
            assert!(
                revoked_at.elapsed() < kca::background::RESYNC_INTERVAL + Duration::from_secs(2),
                "replica {name} still serves {} of 500 revocations",
                listed.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let propagation = revoked_at.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    watcher.await.unwrap();
    let samples = samples.lock().unwrap();
    for (name, seen) in ["a", "b"].iter().zip(samples.iter()) {
        assert!(seen.len() > 10, "replica {name}: {} samples", seen.len());
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "replica {name}: CRL numbers went back: {seen:?}");
    }
    println!("every revocation in both replicas' CRLs {propagation:?} after the last revoke answered");
    drop(database);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_load_loses_no_certificate_it_handed_out() {
    let database = PgDatabase::create();
    let deployment = Arc::new(Deployment::new(database.url.clone()));
    let a = Arc::new(Mutex::new(deployment.start_replica("a", &[]).await));
    let b = Arc::new(deployment.start_replica("b", &[]).await);
    let token = deployment.token("admin");
    let (status, _) = deployment
        .post(&b, "/v1/clusters", &token, json!({"name": "load", "server": "https://k:6443"}))
        .await;
    assert_eq!(status, 201);
    let a_url = a.lock().unwrap().url.clone();

    // 8 clients issue through replica a as fast as they can; a is SIGKILLed once the load is
    // running, and the clients go on until their requests have failed after the kill.
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (deployment, received, failures, done, token, url) = (
            deployment.clone(),
            received.clone(),
            failures.clone(),
            done.clone(),
            token.clone(),
            a_url.clone(),
        );
        clients.push(tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let response = deployment
                    .client
                    .post(format!("{url}/v1/clusters/load/kubeconfigs"))
                    .bearer_auth(&token)
                    .json(&json!({"user": format!("client-{c}")}))
                    .send()
                    .await;
                match response {
                    Ok(response) if response.status() == 201 => {
                        if let Ok(body) = response.json::<serde_json::Value>().await {
                            received.lock().unwrap().push(body["serial"].as_str().unwrap().to_string());
                        }
                    }
                    _ => {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.lock().unwrap().len() <= 20 {
        assert!(
            Instant::now() < deadline,
            "the load did not get going: {} issued",
            received.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failures_before_kill = failures.load(std::sync::atomic::Ordering::Relaxed);
    a.lock().unwrap().kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while failures.load(std::sync::atomic::Ordering::Relaxed) < failures_before_kill + 8 {
        assert!(Instant::now() < deadline, "requests to the killed replica did not fail");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let received = received.lock().unwrap().clone();

    // Every certificate any client received is recorded, and revocable through the survivor.
    for serial in &received {
        let url = format!("{}/v1/clusters/load/certificates/{serial}", b.url);
        let response = deployment.client.get(url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), 200, "{serial} was handed out but is not recorded");
    }
    let mut revoked = Vec::new();
    for c in 0..8 {
        let (status, body) = deployment
            .post(&b, "/v1/clusters/load/revocations", &token, json!({"user": format!("client-{c}")}))
            .await;
        assert_eq!(status, 200, "{body}");
        revoked.extend(body["serials"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()));
    }
    assert!(received.iter().all(|s| revoked.contains(s)), "every received certificate was revoked");
    let (_, listed) = deployment.crl(&b, "load").await.unwrap();
    assert!(received.iter().all(|s| listed.contains(s)), "and is in the survivor's CRL");
    println!(
        "{} certificates received before and around the SIGKILL; all recorded and revoked",
        received.len()
    );
    drop(database);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_passes_on_when_the_leader_goes() {
    use kca::store::Store;
    use kca::store::postgres::PostgresStore;
    let database = PgDatabase::create();
    let first = PostgresStore::connect(&database.url, 2).await.unwrap();
    first.migrate().await.unwrap();
    let second = PostgresStore::connect(&database.url, 2).await.unwrap();
    assert!(first.hold_leadership().await.unwrap());
    assert!(!second.hold_leadership().await.unwrap(), "one leader at a time");
    assert!(first.hold_leadership().await.unwrap(), "the leader keeps the lead");
    // The leader's process dies: its connection, and the lock with it, go away.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !second.hold_leadership().await.unwrap() {
        assert!(Instant::now() < deadline, "nobody took over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_re_signs_crls_once_half_their_validity_has_passed() {
    let server =
        TestServer::start_with(Backend::Postgres, |args| args.crl_validity = Duration::from_secs(4)).await;
    let admin = server.token(&[kca::token::Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    let (first, _) = etcd_crl(&server).await;
    let mut seen = vec![first];
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (number, _) = etcd_crl(&server).await;
        if seen.last() != Some(&number) {
            assert!(number > *seen.last().unwrap(), "CRL numbers went back: {seen:?} then {number}");
            seen.push(number);
        }
        if seen.len() >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "CRLs were not re-signed: number {number}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn etcd_crl(server: &TestServer) -> (u64, Vec<String>) {
    let response = server
        .client
        .get(format!("{}/v1/clusters/prod/authorities/etcd/crl", server.url))
        .send()
        .await
        .unwrap();
    crl_facts(&response.bytes().await.unwrap())
}
