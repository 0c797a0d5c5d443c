//! `kca crl-sync` run as the real binary: against the real server, and against a fake server that
//! hands it forged, stale or older CRLs, which it must refuse while keeping the old files.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use der::{Decode, Encode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reqwest::Method;
use serde_json::json;

use crate::common::*;
use crate::revocation::issue_user;
use kca::pki::AuthorityKind;
use kca::token::Scope;

/// What a `kca crl-sync --once` run did.
pub struct Ran {
    pub success: bool,
    pub stderr: String,
}

/// Run `kca crl-sync --once --cluster prod` against `url` with `outputs` (the `--*-out` flags)
/// and `extra` flags; logs as JSON, with nothing from the caller's environment.
pub async fn crl_sync(url: &str, cacert: Option<&Path>, outputs: &[String], extra: &[String]) -> Ran {
    let home = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_kca"));
    command
        .args(["crl-sync", "--once", "--url", url, "--cluster", "prod"])
        .args(outputs)
        .args(extra)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("KCA_LOG_FORMAT", "json")
        .stdin(Stdio::null());
    if let Some(cacert) = cacert {
        command.env("KCA_CACERT", cacert);
    }
    let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    Ran { success: output.status.success(), stderr: String::from_utf8(output.stderr).unwrap() }
}

/// How many PEM blocks a file holds.
pub fn pem_count(path: &Path) -> usize {
    pem::parse_many(std::fs::read(path).unwrap()).unwrap().len()
}

/// Documents served, by last path segment.
type Documents = Arc<Mutex<std::collections::HashMap<String, Vec<u8>>>>;
/// Path and query, and the If-None-Match header, of every request.
type Requests = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A stand-in for kca over plain HTTP on loopback: serves whatever the test puts in `documents`
/// (by last path segment) with an ETag, honours If-None-Match, and records what it was asked.
struct FakeKca {
    url: String,
    documents: Documents,
    requests: Requests,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKca {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeKca {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let documents: Documents = Arc::default();
        let requests: Requests = Arc::default();
        let (served, seen) = (documents.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (served, seen) = (served.clone(), seen.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let uri = request.uri().to_string();
                        let inm =
                            request.headers().get("if-none-match").map(|v| v.to_str().unwrap().to_string());
                        seen.lock().unwrap().push((uri, inm.clone()));
                        let name = request.uri().path().rsplit('/').next().unwrap_or_default().to_string();
                        let body = served.lock().unwrap().get(&name).cloned();
                        let response = match body {
                            None => hyper::Response::builder().status(404).body(Full::new(Bytes::new())),
                            Some(body) => {
                                let etag =
                                    format!("\"{}\"", kca::pki::fingerprint_sha256(&body).replace(':', ""));
                                if inm.as_deref() == Some(etag.as_str()) {
                                    hyper::Response::builder()
                                        .status(304)
                                        .header("etag", etag)
                                        .body(Full::new(Bytes::new()))
                                } else {
                                    hyper::Response::builder()
                                        .header("etag", etag)
                                        .body(Full::new(Bytes::from(body)))
                                }
                            }
                        };
                        async move { Ok::<_, std::convert::Infallible>(response.unwrap()) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, documents, requests, task }
    }

    fn serve(&self, name: &str, body: Vec<u8>) {
        self.documents.lock().unwrap().insert(name.to_string(), body);
    }
}

/// The output files of one test, and their bytes.
struct Outputs {
    dir: tempfile::TempDir,
}

impl Outputs {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn flags(&self) -> Vec<String> {
        let path = |name: &str| self.path(name).display().to_string();
        vec![
            "--ca-out".into(),
            path("client-ca.pem"),
            "--crl-out".into(),
            path("client-crl.pem"),
            "--map-out".into(),
            path("revoked.map"),
        ]
    }

    /// Every file in the directory, by name, with its bytes.
    fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
            .collect();
        files.sort();
        files
    }
}

/// A PEM CRL bundle with the first CRL replaced by `der`.
fn with_first_crl(bundle: &str, der: &[u8]) -> Vec<u8> {
    let mut blocks: Vec<Vec<u8>> =
        pem::parse_many(bundle).unwrap().into_iter().map(|b| b.into_contents()).collect();
    blocks[0] = der.to_vec();
    blocks.iter().map(|b| kca::pki::to_pem("X509 CRL", b)).collect::<String>().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crl_sync_refuses_forged_stale_and_older_crls_and_keeps_the_files() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    let cacert = server.data_dir.path().join("tls/dev-cert.pem");
    // One revocation: the operators CRL gets a higher number and the map has a line.
    let revoked = issue_user(&server, &admin, "prod", "mallory", &["dev"]).await;
    let serial = revoked["serial"].as_str().unwrap();
    let path = format!("/v1/clusters/prod/certificates/{serial}/revoke");
    server.json(Method::POST, &path, Some(&admin), Some(json!({"reason": "keyCompromise"})), 200).await;

    // Against the real server, twice: the second pass asks with ETags and changes nothing.
    let outputs = Outputs::new();
    let first = crl_sync(&server.url, Some(&cacert), &outputs.flags(), &[]).await;
    assert!(first.success, "{}", first.stderr);
    assert!(first.stderr.contains("verified and updated"), "{}", first.stderr);
    assert_eq!(pem_count(&outputs.path("client-ca.pem")), 3);
    assert_eq!(pem_count(&outputs.path("client-crl.pem")), 3);
    assert_eq!(
        std::fs::read_to_string(outputs.path("revoked.map")).unwrap(),
        format!("{serial} keyCompromise\n")
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(outputs.path("client-crl.pem.state.json")).unwrap()).unwrap();
    let numbers: Vec<u64> =
        state["crl_numbers"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(numbers.len(), 3);
    let operators = server.app.snapshot("prod").await.unwrap().signer(AuthorityKind::Operators).unwrap().id;
    let operators_number = server.app.published.crl(operators).unwrap().record.number as u64;
    assert!(numbers.contains(&operators_number), "{state}");
    let again = crl_sync(&server.url, Some(&cacert), &outputs.flags(), &[]).await;
    assert!(again.success && again.stderr.contains("unchanged"), "{}", again.stderr);
    // Without KCA_CACERT the dev certificate is not trusted: a clear error, nothing changed.
    let before = outputs.snapshot();
    let untrusted = crl_sync(&server.url, None, &outputs.flags(), &[]).await;
    assert!(!untrusted.success && untrusted.stderr.contains("not trusted"), "{}", untrusted.stderr);
    assert_eq!(outputs.snapshot(), before);

    // The same documents from a fake kca: accepted as they are (and with 304s the second time).
    let (_, _, ca_bundle) = server.send(Method::GET, "/v1/clusters/prod/client-ca.pem", None, None).await;
    let (_, _, crl_bundle) = server.send(Method::GET, "/v1/clusters/prod/client-crl.pem", None, None).await;
    let (_, _, map) = server.send(Method::GET, "/v1/clusters/prod/revoked.map", None, None).await;
    let fake = FakeKca::start().await;
    fake.serve("client-ca.pem", ca_bundle.clone().into_bytes());
    fake.serve("client-crl.pem", crl_bundle.clone().into_bytes());
    fake.serve("revoked.map", map.clone().into_bytes());
    for _ in 0..2 {
        let ran = crl_sync(&fake.url, None, &outputs.flags(), &[]).await;
        assert!(ran.success, "{}", ran.stderr);
    }
    {
        let requests = fake.requests.lock().unwrap();
        assert_eq!(requests.len(), 6);
        assert_eq!(
            requests[0].0,
            "/v1/clusters/prod/client-ca.pem?kinds=operators%2Ccontrol-plane%2Ckubelet"
        );
        assert!(requests[..3].iter().all(|(_, inm)| inm.is_none()), "another source: no ETag reused");
        assert!(requests[3..].iter().all(|(_, inm)| inm.is_some()), "{requests:?}");
    }
    let good = outputs.snapshot();

    let snapshot = server.app.snapshot("prod").await.unwrap();
    let operators = server.app.keyring.signer(snapshot.signer(AuthorityKind::Operators).unwrap()).unwrap();
    let genuine = pem::parse_many(&crl_bundle).unwrap()[0].contents().to_vec();
    let number = crate::revocation::crl_facts(&genuine).0;
    let now = time::OffsetDateTime::now_utc();
    let week = std::time::Duration::from_secs(7 * 86_400);

    // 1. The genuine operators CRL signed again by another key (same DN, same AKI, same number).
    let impostor = kca::pki::ca::create_authority(
        &kca::pki::ca::AuthorityIdentity {
            cluster_name: "prod",
            cluster_id: "impostor",
            kind: AuthorityKind::Operators,
            generation: 1,
        },
        kca::pki::KeyAlgorithm::P256,
        now,
    )
    .unwrap();
    let mut forged = x509_cert::crl::CertificateList::from_der(&genuine).unwrap();
    let signature = impostor.signer.key().sign_bytes(&forged.tbs_cert_list.to_der().unwrap()).unwrap();
    forged.signature = der::asn1::BitString::from_bytes(&signature).unwrap();
    let forged = forged.to_der().unwrap();
    // 2. Signed by the real CA, with a higher number, but a week and a day old.
    let expired =
        kca::clusters::sign_crl_now(&operators, number + 50, &[], now - time::Duration::days(8), week)
            .unwrap();
    // 3. Signed by the real CA, current, but numbered lower than the one accepted.
    let older = kca::clusters::sign_crl_now(&operators, number - 1, &[], now, week).unwrap();
    let lower_than = format!("lower than {number}");

    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("signed by the wrong key", with_first_crl(&crl_bundle, &forged), "does not verify"),
        ("expired", with_first_crl(&crl_bundle, &expired.der), "expired at"),
        ("a lower CRL Number", with_first_crl(&crl_bundle, &older.der), lower_than.as_str()),
        (
            "one CRL short",
            pem::parse_many(&crl_bundle).unwrap()[1..]
                .iter()
                .map(|b| kca::pki::to_pem("X509 CRL", b.contents()))
                .collect::<String>()
                .into_bytes(),
            "exactly one per CA",
        ),
    ];
    for (what, crls, reason) in cases {
        fake.serve("client-crl.pem", crls);
        let ran = crl_sync(&fake.url, None, &outputs.flags(), &[]).await;
        assert!(!ran.success, "{what}: accepted: {}", ran.stderr);
        assert!(ran.stderr.contains(reason), "{what}: {}", ran.stderr);
        assert!(ran.stderr.contains("the files are left as they were"), "{what}: {}", ran.stderr);
        assert_eq!(outputs.snapshot(), good, "{what}: the files changed");
    }

    // The genuine bundle is accepted again; a newer genuine CRL moves the number forward.
    fake.serve("client-crl.pem", crl_bundle.clone().into_bytes());
    let ran = crl_sync(&fake.url, None, &outputs.flags(), &[]).await;
    assert!(ran.success, "{}", ran.stderr);
    assert_eq!(outputs.snapshot(), good);
    let newer = kca::clusters::sign_crl_now(&operators, number + 9, &[], now, week).unwrap();
    fake.serve("client-crl.pem", with_first_crl(&crl_bundle, &newer.der));
    let ran = crl_sync(&fake.url, None, &outputs.flags(), &[]).await;
    assert!(ran.success, "{}", ran.stderr);
    assert!(ran.stderr.contains(r#""updated":"client-crl.pem""#), "{}", ran.stderr);
    // And from then on the server's own number counts as going back.
    fake.serve("client-crl.pem", crl_bundle.clone().into_bytes());
    let ran = crl_sync(&fake.url, None, &outputs.flags(), &[]).await;
    assert!(!ran.success && ran.stderr.contains(&format!("lower than {}", number + 9)), "{}", ran.stderr);

    // A map line that is not `<SERIAL> <reason>` is refused as well.
    let before = outputs.snapshot();
    fake.serve("client-crl.pem", with_first_crl(&crl_bundle, &newer.der));
    fake.serve("revoked.map", b"0A0B keyCompromise\nshow info\n".to_vec());
    let ran = crl_sync(&fake.url, None, &outputs.flags(), &[]).await;
    assert!(!ran.success && ran.stderr.contains("revoked.map"), "{}", ran.stderr);
    assert_eq!(outputs.snapshot(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crl_sync_keeps_going_after_a_refusal_and_stops_on_sigterm() {
    use kca::pki::ca::{AuthorityIdentity, create_authority};
    use kca::pki::crl::{CrlWindow, RevocationReason, RevokedEntry, sign_crl};
    let now = time::OffsetDateTime::now_utc();
    let identity = AuthorityIdentity {
        cluster_name: "prod",
        cluster_id: "loop",
        kind: AuthorityKind::Operators,
        generation: 1,
    };
    let ca = create_authority(&identity, kca::pki::KeyAlgorithm::Ed25519, now).unwrap();
    let crl = |number: u64, this_update: time::OffsetDateTime, revoked: usize| {
        let entries: Vec<RevokedEntry> = (0..revoked)
            .map(|_| RevokedEntry {
                serial: kca::pki::Serial::random().unwrap(),
                revoked_at: this_update,
                reason: RevocationReason::Superseded,
            })
            .collect();
        let window = CrlWindow { number, this_update, next_update: this_update + time::Duration::days(7) };
        kca::pki::to_pem("X509 CRL", &sign_crl(&ca.signer, window, &entries).unwrap()).into_bytes()
    };
    let fake = FakeKca::start().await;
    fake.serve("client-ca.pem", ca.signer.certificate_pem().into_bytes());
    fake.serve("client-crl.pem", crl(1, now, 0));
    fake.serve("revoked.map", Vec::new());

    let outputs = Outputs::new();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kca"))
        .args(["crl-sync", "--url", &fake.url, "--cluster", "prod", "--interval", "1s"])
        .args(outputs.flags())
        .env_clear()
        .env("HOME", outputs.dir.path())
        .stdin(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let crl_file = outputs.path("client-crl.pem");
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while !done() {
            let log = std::fs::read_to_string(log.path()).unwrap();
            assert!(std::time::Instant::now() < deadline, "waiting for {what}; log: {log}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let number_on_disk = || {
        std::fs::read(&crl_file).ok().map(|pem| {
            let der = pem::parse(pem).unwrap().into_contents();
            crate::revocation::crl_facts(&der).0
        })
    };
    wait_for("the first CRL", &|| number_on_disk() == Some(1));

    fake.serve("client-crl.pem", crl(2, now, 3));
    wait_for("CRL 2", &|| number_on_disk() == Some(2));
    assert_eq!(std::fs::read_to_string(outputs.path("revoked.map")).unwrap(), "");

    // An expired CRL is refused at every tick; the process keeps running and the file stays.
    fake.serve("client-crl.pem", crl(3, now - time::Duration::days(8), 0));
    wait_for("a logged refusal", &|| {
        std::fs::read_to_string(log.path()).unwrap().contains("trying again in 1s")
    });
    assert!(child.try_wait().unwrap().is_none());
    assert_eq!(number_on_disk(), Some(2));

    fake.serve("client-crl.pem", crl(4, now, 0));
    wait_for("CRL 4", &|| number_on_disk() == Some(4));

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {}", std::fs::read_to_string(log.path()).unwrap());
    let log = std::fs::read_to_string(log.path()).unwrap();
    assert!(log.contains("expired at"), "{log}");
}
