//! `kca-bench`: the parts of the kca benchmark that wrk cannot do. Each subcommand prints one JSON
//! object on stdout and exits non-zero when something is wrong.
//!
//! - `ceiling`: issuance in-process with the kca library (key generation or CSR check, signing,
//!   PEM) on N threads for S seconds: the most a server on this machine could issue.
//! - `wait-ready`: milliseconds from a given instant (when the harness spawned kca) to the first
//!   200 on `/readyz`.
//! - `revoke`: issue certificates, then revoke them one at a time; each revoke call returns once
//!   the CRL listing it is published, so its latency is revocation-to-published-CRL. Every CRL is
//!   then fetched and checked to list the serial.
//! - `revoke-users`: revoke every certificate of each given user (the harness seeds them) with one
//!   call per user, timed the same way; each answer must name the expected number of serials, and
//!   the CRL fetched after it must list every one.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use kca::issuance::{SubjectKey, Usage, sign};
use kca::pki::ca::{AuthorityIdentity, create_authority};
use kca::pki::{AuthorityKind, KeyAlgorithm};
use serde_json::{Value, json};
use time::OffsetDateTime;

#[derive(Parser)]
#[command(name = "kca-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Issue user certificates in-process on `threads` threads for `seconds`.
    Ceiling {
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Sign this PEM CSR instead of generating a P-256 key for each certificate.
        #[arg(long)]
        csr: Option<PathBuf>,
    },
    /// Wait for `<url>/readyz` to answer 200; report the time since `--since-ns`.
    WaitReady {
        #[arg(long)]
        url: String,
        #[arg(long)]
        cacert: PathBuf,
        /// Nanoseconds since the Unix epoch when the server was spawned (`date +%s%N`).
        #[arg(long)]
        since_ns: u128,
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
    },
    /// Issue `count` kubeconfigs, then revoke them one by one, timing each revoke call.
    Revoke {
        #[arg(long)]
        url: String,
        #[arg(long)]
        cacert: PathBuf,
        #[arg(long, env = "KCA_BENCH_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long)]
        cluster: String,
        #[arg(long, default_value_t = 20)]
        count: usize,
        /// Prefix of the users the certificates are issued to.
        #[arg(long, default_value = "revoke")]
        user_prefix: String,
    },
    /// Revoke every certificate of each `--user`, one call per user, timing each call.
    RevokeUsers {
        #[arg(long)]
        url: String,
        #[arg(long)]
        cacert: PathBuf,
        #[arg(long, env = "KCA_BENCH_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long)]
        cluster: String,
        #[arg(long = "user", required = true)]
        users: Vec<String>,
        /// How many certificates each user holds: each call must revoke exactly these.
        #[arg(long)]
        expect: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Ceiling { threads, seconds, csr } => ceiling(threads, seconds, csr),
        Command::WaitReady { url, cacert, since_ns, timeout } => {
            runtime().and_then(|rt| rt.block_on(wait_ready(&url, &cacert, since_ns, timeout)))
        }
        Command::Revoke { url, cacert, token, cluster, count, user_prefix } => {
            runtime().and_then(|rt| rt.block_on(revoke(&url, &cacert, &token, &cluster, count, &user_prefix)))
        }
        Command::RevokeUsers { url, cacert, token, cluster, users, expect } => runtime()
            .and_then(|rt| rt.block_on(revoke_users(&url, &cacert, &token, &cluster, &users, expect))),
    };
    match outcome {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("kca-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

type Outcome = Result<Value, String>;

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())
}

fn ceiling(threads: usize, seconds: f64, csr: Option<PathBuf>) -> Outcome {
    let key = match &csr {
        Some(path) => {
            SubjectKey::Csr(std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => SubjectKey::Generate(KeyAlgorithm::P256),
    };
    let usage = Usage::user("u".into(), vec!["g".into()], Duration::from_secs(3600));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (key, usage, stop) = (key.clone(), usage.clone(), stop.clone());
            std::thread::spawn(move || -> Result<u64, String> {
                let identity = AuthorityIdentity {
                    cluster_name: "bench",
                    cluster_id: "00000000-0000-0000-0000-000000000000",
                    kind: AuthorityKind::Operators,
                    generation: 1,
                };
                let ca = create_authority(&identity, KeyAlgorithm::P256, OffsetDateTime::now_utc())
                    .map_err(|e| e.to_string())?;
                let mut issued = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let signed = sign(&ca.signer, &key, &usage, OffsetDateTime::now_utc())
                        .map_err(|e| e.to_string())?;
                    std::hint::black_box(&signed);
                    issued += 1;
                }
                Ok(issued)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for worker in workers {
        total += worker.join().map_err(|_| "a worker panicked".to_string())??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_seconds = process_cpu_seconds();
    Ok(json!({
        "threads": threads,
        "mode": if csr.is_some() { "csr" } else { "generate-p256" },
        "seconds": elapsed,
        "certificates": total,
        "per_second": total as f64 / elapsed,
        // CPU the whole process used (CA creation included, negligible), per certificate: what
        // one issuance costs when nothing else competes, whatever the machine's other load.
        "cpu_ms_per_certificate": cpu_seconds.map(|s| s * 1000.0 / total.max(1) as f64),
    }))
}

/// utime + stime of this process, from /proc/self/stat (Linux clock ticks are 1/100 s).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn client(cacert: &PathBuf) -> Result<reqwest::Client, String> {
    let pem = std::fs::read(cacert).map_err(|e| format!("{}: {e}", cacert.display()))?;
    let certificate = reqwest::Certificate::from_pem(&pem).map_err(|e| e.to_string())?;
    reqwest::Client::builder()
        .tls_certs_only([certificate])
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())
}

fn epoch_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

async fn wait_ready(url: &str, cacert: &PathBuf, since_ns: u128, timeout: f64) -> Outcome {
    let client = client(cacert)?;
    let deadline = Instant::now() + Duration::from_secs_f64(timeout);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last = match client.get(format!("{url}/readyz")).timeout(Duration::from_secs(2)).send().await {
            Ok(response) if response.status() == 200 => {
                let ready_ms = (epoch_ns().saturating_sub(since_ns)) as f64 / 1e6;
                return Ok(json!({ "ready_ms": ready_ms, "attempts": attempts }));
            }
            Ok(response) => format!("status {}", response.status()),
            Err(err) => format!("{err:?}"),
        };
        if Instant::now() > deadline {
            return Err(format!("{url}/readyz did not answer 200 within {timeout} s; last: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The value at percentile `p` (nearest rank) of sorted `values`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn revoke(
    url: &str,
    cacert: &PathBuf,
    token: &str,
    cluster: &str,
    count: usize,
    user_prefix: &str,
) -> Outcome {
    let client = client(cacert)?;
    let mut serials = Vec::with_capacity(count);
    for i in 0..count {
        let response = client
            .post(format!("{url}/v1/clusters/{cluster}/kubeconfigs"))
            .bearer_auth(token)
            .json(&json!({ "user": format!("{user_prefix}-{i}"), "groups": ["g"] }))
            .send()
            .await
            .map_err(|e| format!("issuing: {e}"))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| format!("issuing: {e}"))?;
        if status != 201 {
            return Err(format!("issuing answered {status}: {body}"));
        }
        let serial = body["serial"].as_str().ok_or("no serial in the kubeconfig answer")?;
        serials.push(serial.to_string());
    }
    let crl_url = format!("{url}/v1/clusters/{cluster}/authorities/operators/crl");
    let mut latencies = Vec::with_capacity(count);
    let (mut entries, mut crl_bytes) = (0usize, 0usize);
    for serial in &serials {
        let started = Instant::now();
        let response = client
            .post(format!("{url}/v1/clusters/{cluster}/certificates/{serial}/revoke"))
            .bearer_auth(token)
            .json(&json!({ "reason": "keyCompromise" }))
            .send()
            .await
            .map_err(|e| format!("revoking: {e}"))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| format!("revoking: {e}"))?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        if status != 200 {
            return Err(format!("revoking {serial} answered {status}: {}", String::from_utf8_lossy(&body)));
        }
        // The call returned: the published CRL must list the serial already.
        let response = client.get(&crl_url).send().await.map_err(|e| format!("fetching the CRL: {e}"))?;
        if response.status() != 200 {
            return Err(format!("fetching the CRL answered {}", response.status()));
        }
        let der = response.bytes().await.map_err(|e| format!("fetching the CRL: {e}"))?;
        let lines = kca::pki::crl::read_entries(&der).map_err(|e| format!("reading the CRL: {e}"))?;
        if !lines.iter().any(|line| line.split(' ').next() == Some(serial.as_str())) {
            return Err(format!("the CRL published after revoking {serial} does not list it"));
        }
        entries = lines.len();
        crl_bytes = der.len();
    }
    let mut report = latency_report(latencies.clone());
    // Each call's latency in order, so that rounds can be pooled (`run.sh --only revocation`).
    report.insert("latencies_ms".into(), json!(latencies));
    report.insert("crl_entries".into(), json!(entries));
    report.insert("crl_bytes".into(), json!(crl_bytes));
    Ok(Value::Object(report))
}

/// Count, percentiles, max and mean of latencies in milliseconds, each call verified.
fn latency_report(mut latencies: Vec<f64>) -> serde_json::Map<String, Value> {
    latencies.sort_by(f64::total_cmp);
    let mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
    let fields = [
        ("revocations", json!(latencies.len())),
        ("p50_ms", json!(percentile(&latencies, 50.0))),
        ("p90_ms", json!(percentile(&latencies, 90.0))),
        ("p99_ms", json!(percentile(&latencies, 99.0))),
        ("max_ms", json!(latencies.last().copied().unwrap_or(f64::NAN))),
        ("mean_ms", json!(mean)),
        ("verified", json!(true)),
    ];
    fields.into_iter().map(|(key, value)| (key.to_string(), value)).collect()
}

async fn revoke_users(
    url: &str,
    cacert: &PathBuf,
    token: &str,
    cluster: &str,
    users: &[String],
    expect: usize,
) -> Outcome {
    let client = client(cacert)?;
    let crl_url = format!("{url}/v1/clusters/{cluster}/authorities/operators/crl");
    let mut latencies = Vec::with_capacity(users.len());
    let (mut entries, mut crl_bytes) = (0usize, 0usize);
    for user in users {
        let started = Instant::now();
        let response = client
            .post(format!("{url}/v1/clusters/{cluster}/revocations"))
            .bearer_auth(token)
            .json(&json!({ "user": user, "reason": "keyCompromise" }))
            .send()
            .await
            .map_err(|e| format!("revoking {user}: {e}"))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| format!("revoking {user}: {e}"))?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        if status != 200 {
            return Err(format!("revoking {user} answered {status}: {}", String::from_utf8_lossy(&body)));
        }
        let answer: Value = serde_json::from_slice(&body).map_err(|e| format!("revoking {user}: {e}"))?;
        let serials: Vec<&str> =
            answer["serials"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        if serials.len() != expect {
            return Err(format!("revoking {user} revoked {} certificates, not {expect}", serials.len()));
        }
        // The call returned: the published CRL must list every serial already.
        let response = client.get(&crl_url).send().await.map_err(|e| format!("fetching the CRL: {e}"))?;
        if response.status() != 200 {
            return Err(format!("fetching the CRL answered {}", response.status()));
        }
        let der = response.bytes().await.map_err(|e| format!("fetching the CRL: {e}"))?;
        let lines = kca::pki::crl::read_entries(&der).map_err(|e| format!("reading the CRL: {e}"))?;
        let listed: std::collections::HashSet<&str> =
            lines.iter().filter_map(|line| line.split(' ').next()).collect();
        if let Some(missing) = serials.iter().find(|serial| !listed.contains(*serial)) {
            return Err(format!("the CRL published after revoking {user} does not list {missing}"));
        }
        entries = lines.len();
        crl_bytes = der.len();
    }
    let mut report = latency_report(latencies);
    report.insert("certificates_per_user".into(), json!(expect));
    report.insert("crl_entries".into(), json!(entries));
    report.insert("crl_bytes".into(), json!(crl_bytes));
    Ok(Value::Object(report))
}
