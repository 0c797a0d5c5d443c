//! The proxy recipe end to end: a real HAProxy (2.6, Debian's) terminating mutual TLS in front of
//! a mutual-TLS backend that records the headers it gets, fed by `kca crl-sync`; a revocation and a
//! CA rotation reach it through the runtime API with no restart.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;
use crate::crl_sync::{crl_sync, pem_count};
use crate::revocation::issue_user;
use kca::token::Scope;

const HAPROXY: &str = "/usr/sbin/haproxy";

/// The request headers the backend received, one list per request, in order.
type Seen = Arc<Mutex<Vec<Vec<(String, String)>>>>;

/// A mutual-TLS backend on loopback standing in for kube-apiserver: it trusts only the aggregation
/// CA, records the CN of every client certificate and the headers of every request, and answers 200.
struct Upstream {
    port: u16,
    seen: Seen,
    /// The client certificate CN of every connection (HAProxy's front-proxy certificate).
    peers: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    async fn start(cert_pem: &str, key_pem: &str, client_ca_pem: &str) -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).map(|c| c.unwrap()).collect();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap())
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Seen = Arc::default();
        let peers: Arc<Mutex<Vec<String>>> = Arc::default();
        let (record, connected) = (seen.clone(), peers.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (record, connected, acceptor) = (record.clone(), connected.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    if let Some(certs) = tls.get_ref().1.peer_certificates() {
                        let cert = {
                            use der::Decode;
                            x509_cert::Certificate::from_der(certs[0].as_ref()).unwrap()
                        };
                        connected.lock().unwrap().push(crate::kubeconfigs::subject_of(&cert).0);
                    }
                    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let headers = request
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("?").to_string()))
                            .collect();
                        record.lock().unwrap().push(headers);
                        async {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                                "ok",
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { port, seen, peers, task }
    }

    /// The values of one header in the last request, in order.
    fn last(&self, name: &str) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        let last = seen.last().expect("the backend got a request");
        last.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).collect()
    }

    fn names_of_last(&self) -> Vec<String> {
        self.seen.lock().unwrap().last().unwrap().iter().map(|(k, _)| k.clone()).collect()
    }
}

/// A running HAProxy, killed (by its pid) when dropped.
struct Haproxy {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The frontend of the README recipe, with paths in `dir` and `groups` X-Remote-Group rules.
fn haproxy_config(dir: &Path, port: u16, backend_port: u16, groups: usize) -> String {
    let d = dir.display();
    let mut group_rules = String::new();
    for i in 1..=groups {
        group_rules.push_str(&format!(
            "    http-request add-header X-Remote-Group %[ssl_c_s_dn(O,{i})] if {{ ssl_c_s_dn(O,{i}) -m found }}\n"
        ));
    }
    format!(
        "global
    stats socket {d}/admin.sock level admin
    tune.ssl.cachesize 0
    tune.bufsize 65536

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s

frontend kube-apiserver
    bind 127.0.0.1:{port} ssl crt {d}/server.pem verify required ca-file {d}/client-ca.pem crl-file {d}/client-crl.pem no-tls-tickets alpn h2,http/1.1
    http-request deny deny_status 403 if {{ ssl_c_serial,hex,map({d}/revoked.map) -m found }}
    http-request del-header X-Remote-User
    http-request del-header X-Remote-Group
    http-request del-header X-Remote-Extra- -m beg
    http-request set-header X-Remote-User %[ssl_c_s_dn(CN)]
{group_rules}    default_backend apiserver

backend apiserver
    server apiserver 127.0.0.1:{backend_port} ssl verify required ca-file {d}/control-plane-ca.pem crt {d}/front-proxy-client.pem verifyhost kubernetes
"
    )
}

impl Haproxy {
    fn start(dir: &Path, backend_port: u16, groups: usize) -> Self {
        let port = free_port();
        let config =
            temp_file(dir, "haproxy.cfg", haproxy_config(dir, port, backend_port, groups).as_bytes());
        let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
        let child = Command::new(HAPROXY)
            .args(["-f", config.to_str().unwrap(), "-db"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("haproxy runs (apt-get install haproxy)");
        let mut haproxy = Self { child, dir: dir.to_path_buf(), port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = haproxy.child.try_wait().unwrap() {
                panic!("haproxy exited with {status}: {}", haproxy.log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && haproxy.socket().exists() {
                break;
            }
            assert!(Instant::now() < deadline, "haproxy did not start: {}", haproxy.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        haproxy
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/api/v1/namespaces", self.port)
    }

    /// One runtime API command, answered.
    fn command(&self, command: &str) -> String {
        let mut stream = std::os::unix::net::UnixStream::connect(self.socket()).unwrap();
        stream.write_all(format!("{command}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    /// The pid HAProxy reports, checked against the process the test started and still running.
    fn same_process(&mut self) -> u32 {
        assert!(self.child.try_wait().unwrap().is_none(), "haproxy exited: {}", self.log());
        let info = self.command("show info");
        let pid: u32 = info
            .lines()
            .find_map(|l| l.strip_prefix("Pid: "))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no Pid in show info: {info}"));
        assert_eq!(pid, self.child.id());
        pid
    }
}

/// A TLS client presenting an issued certificate and key, trusting `ca_pem`. It keeps its
/// connections open; a new client makes a new full handshake (no session to resume).
fn client(issued: &Value, ca_pem: &str) -> reqwest::Client {
    let identity = format!(
        "{}{}",
        issued["certificate_pem"].as_str().unwrap(),
        issued["private_key_pem"].as_str().unwrap()
    );
    let roots: Vec<reqwest::Certificate> = reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only(roots)
        .identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// One request on a new connection: the status, or None when the TLS handshake was refused.
async fn fresh_request(haproxy: &Haproxy, issued: &Value, ca_pem: &str) -> Option<u16> {
    request(&client(issued, ca_pem), haproxy, &[]).await
}

async fn request(client: &reqwest::Client, haproxy: &Haproxy, headers: &[(&str, &str)]) -> Option<u16> {
    let mut request = client.get(haproxy.url());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    match request.send().await {
        Ok(response) => Some(response.status().as_u16()),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_enforces_revocation_and_rotation_with_no_restart() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_component_cluster(&admin, "prod").await;
    server.create_cluster(&admin, "staging").await;
    let dir = tempfile::tempdir().unwrap();
    let cacert = server.data_dir.path().join("tls/dev-cert.pem");

    // HAProxy's serving certificate, and the backend's: the apiserver profile of the control-plane
    // CA. HAProxy's client certificate toward the backend: front-proxy-client, aggregation CA.
    let issue = |profile: &'static str, body: Value| {
        let server = &server;
        let admin = admin.clone();
        async move {
            let issued = server
                .json(Method::POST, "/v1/clusters/prod/certificates", Some(&admin), Some(body), 201)
                .await;
            assert_eq!(issued["profile"], profile);
            let pem = |field: &str| issued[field].as_str().unwrap().to_string();
            (pem("certificate_pem"), pem("private_key_pem"))
        }
    };
    let serving = json!({"profile": "apiserver", "ip_addresses": ["127.0.0.1"]});
    let (cert, key) = issue("apiserver", serving.clone()).await;
    temp_file(dir.path(), "server.pem", format!("{cert}{key}").as_bytes());
    let (cert, key) = issue("front-proxy-client", json!({"profile": "front-proxy-client"})).await;
    temp_file(dir.path(), "front-proxy-client.pem", format!("{cert}{key}").as_bytes());
    let (upstream_cert, upstream_key) = issue("apiserver", serving).await;
    let (_, _, control_plane_ca) =
        server.send(Method::GET, "/v1/clusters/prod/authorities/control-plane/ca.pem", None, None).await;
    temp_file(dir.path(), "control-plane-ca.pem", control_plane_ca.as_bytes());
    let (_, _, aggregation_ca) =
        server.send(Method::GET, "/v1/clusters/prod/authorities/aggregation/ca.pem", None, None).await;

    let alice = issue_user(&server, &admin, "prod", "alice", &["dev", "ops", "audit"]).await;
    let bob = issue_user(&server, &admin, "prod", "bob", &["dev"]).await;
    let carol = issue_user(&server, &admin, "prod", "carol", &[]).await;
    let eve = issue_user(&server, &admin, "staging", "eve", &["dev"]).await;

    // The files HAProxy starts with come from one crl-sync pass.
    let outputs = [
        "--ca-out",
        &dir.path().join("client-ca.pem").display().to_string(),
        "--crl-out",
        &dir.path().join("client-crl.pem").display().to_string(),
        "--map-out",
        &dir.path().join("revoked.map").display().to_string(),
    ]
    .map(String::from);
    let first = crl_sync(&server.url, Some(&cacert), &outputs, &[]).await;
    assert!(first.success, "{}", first.stderr);
    assert_eq!(pem_count(&dir.path().join("client-ca.pem")), 3);
    assert_eq!(pem_count(&dir.path().join("client-crl.pem")), 3);
    assert_eq!(std::fs::read_to_string(dir.path().join("revoked.map")).unwrap(), "");

    let backend = Upstream::start(&upstream_cert, &upstream_key, &aggregation_ca).await;
    let mut haproxy = Haproxy::start(dir.path(), backend.port, 16);
    let pid = haproxy.same_process();

    // A kubeconfig certificate passes: the user from the CN, one X-Remote-Group per O, in order;
    // whatever X-Remote-* the client sent is gone.
    let spoofed = [
        ("X-Remote-User", "admin"),
        ("X-Remote-Group", "system:masters"),
        ("x-remote-extra-scopes", "everything"),
    ];
    assert_eq!(request(&client(&alice, &control_plane_ca), &haproxy, &spoofed).await, Some(200));
    assert_eq!(backend.last("x-remote-user"), ["alice"]);
    assert_eq!(backend.last("x-remote-group"), ["dev", "ops", "audit"]);
    assert!(
        !backend.names_of_last().iter().any(|n| n.starts_with("x-remote-extra")),
        "{:?}",
        backend.names_of_last()
    );
    assert_eq!(request(&client(&carol, &control_plane_ca), &haproxy, &spoofed).await, Some(200));
    assert_eq!(backend.last("x-remote-user"), ["carol"]);
    assert!(backend.last("x-remote-group").is_empty());
    let response = client(&carol, &control_plane_ca).get(haproxy.url()).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2, "kubectl-like clients get HTTP/2");

    // Another cluster's operators CA is not trusted: the handshake fails, nothing reaches the backend.
    let before = backend.seen.lock().unwrap().len();
    assert_eq!(fresh_request(&haproxy, &eve, &control_plane_ca).await, None);
    assert_eq!(backend.seen.lock().unwrap().len(), before);

    // An open keep-alive connection of alice, made before the revocation.
    let alice_kept = client(&alice, &control_plane_ca);
    assert_eq!(request(&alice_kept, &haproxy, &[]).await, Some(200));

    // Revoke alice. HAProxy knows nothing yet: she still gets in.
    let path = format!("/v1/clusters/prod/certificates/{}/revoke", alice["serial"].as_str().unwrap());
    server.json(Method::POST, &path, Some(&admin), Some(json!({"reason": "keyCompromise"})), 200).await;
    assert_eq!(fresh_request(&haproxy, &alice, &control_plane_ca).await, Some(200));

    // One crl-sync pass through the runtime API: new CRLs and map, same HAProxy process.
    let socket = haproxy.socket().display().to_string();
    let runtime = [
        "--haproxy-socket".to_string(),
        socket,
        "--haproxy-crl-path".into(),
        dir.path().join("client-crl.pem").display().to_string(),
        "--haproxy-ca-path".into(),
        dir.path().join("client-ca.pem").display().to_string(),
        "--haproxy-map-path".into(),
        dir.path().join("revoked.map").display().to_string(),
    ];
    let synced = crl_sync(&server.url, Some(&cacert), &outputs, &runtime).await;
    assert!(synced.success, "{}", synced.stderr);
    assert!(synced.stderr.contains(r#""updated":"client-crl.pem,revoked.map""#), "{}", synced.stderr);
    assert_eq!(haproxy.same_process(), pid);

    // A new handshake with alice's certificate is refused; bob and carol still pass.
    assert_eq!(fresh_request(&haproxy, &alice, &control_plane_ca).await, None);
    assert_eq!(fresh_request(&haproxy, &bob, &control_plane_ca).await, Some(200));
    assert_eq!(backend.last("x-remote-user"), ["bob"]);
    assert_eq!(fresh_request(&haproxy, &carol, &control_plane_ca).await, Some(200));
    // Her connection from before the swap is still open, but the map denies every request on it.
    assert_eq!(request(&alice_kept, &haproxy, &[]).await, Some(403));
    let map = haproxy.command(&format!("show map {}", dir.path().join("revoked.map").display()));
    assert!(map.contains(alice["serial"].as_str().unwrap()), "{map}");

    // Rotate the operators CA: generation 2 signs; HAProxy does not trust it yet.
    server
        .json(Method::POST, "/v1/clusters/prod/authorities/operators/rotate", Some(&admin), None, 200)
        .await;
    let dave = issue_user(&server, &admin, "prod", "dave", &["ops"]).await;
    assert_eq!(fresh_request(&haproxy, &dave, &control_plane_ca).await, None);

    // crl-sync pushes the CA bundle (both generations) and a CRL for each, still no restart.
    let rotated = crl_sync(&server.url, Some(&cacert), &outputs, &runtime).await;
    assert!(rotated.success, "{}", rotated.stderr);
    assert!(rotated.stderr.contains(r#""updated":"client-ca.pem,client-crl.pem""#), "{}", rotated.stderr);
    assert_eq!(pem_count(&dir.path().join("client-ca.pem")), 4);
    assert_eq!(pem_count(&dir.path().join("client-crl.pem")), 4);
    assert_eq!(haproxy.same_process(), pid);
    let ca_files = haproxy.command("show ssl ca-file");
    assert!(ca_files.contains("client-ca.pem - 4 certificate(s)"), "{ca_files}");

    // Generation 1 (bob) and generation 2 (dave) both pass; alice stays out.
    assert_eq!(fresh_request(&haproxy, &bob, &control_plane_ca).await, Some(200));
    assert_eq!(fresh_request(&haproxy, &dave, &control_plane_ca).await, Some(200));
    assert_eq!(backend.last("x-remote-user"), ["dave"]);
    assert_eq!(backend.last("x-remote-group"), ["ops"]);
    // Every connection to the backend was HAProxy's, with its front-proxy certificate.
    let peers = backend.peers.lock().unwrap().clone();
    assert!(!peers.is_empty() && peers.iter().all(|cn| cn == "front-proxy-client"), "{peers:?}");
    assert_eq!(fresh_request(&haproxy, &alice, &control_plane_ca).await, None);

    // Nothing new: the next pass gets 304s and touches nothing.
    let idle = crl_sync(&server.url, Some(&cacert), &outputs, &runtime).await;
    assert!(idle.success, "{}", idle.stderr);
    assert!(idle.stderr.contains("unchanged"), "{}", idle.stderr);
    assert_eq!(haproxy.same_process(), pid);
    let state: BTreeMap<String, Value> =
        serde_json::from_slice(&std::fs::read(dir.path().join("client-crl.pem.state.json")).unwrap())
            .unwrap();
    assert_eq!(state["crl_numbers"].as_object().unwrap().len(), 4, "{state:?}");
}

/// The client certificate and key of a kubeconfig file `kca kubeconfig` wrote, as [`client`] takes them.
fn identity_of_kubeconfig(path: &Path) -> Value {
    use base64::Engine;
    let kubeconfig: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let user = &kubeconfig["users"][0]["user"];
    let decode = |field: &str| {
        let data = base64::engine::general_purpose::STANDARD.decode(user[field].as_str().unwrap()).unwrap();
        String::from_utf8(data).unwrap()
    };
    json!({"certificate_pem": decode("client-certificate-data"), "private_key_pem": decode("client-key-data")})
}

crate::on_both_backends!(rotating_the_operators_ca_and_retiring_the_old_one_cuts_off_its_kubeconfigs);

/// `kca authorities rotate CLUSTER operators --yes` (exo's rotate-operators-ca): a kubeconfig signed
/// by the old operators CA passes HAProxy before, and is refused after the next `kca crl-sync`; one
/// issued after the rotation passes.
async fn rotating_the_operators_ca_and_retiring_the_old_one_cuts_off_its_kubeconfigs(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_component_cluster(&admin, "prod").await;
    let dir = tempfile::tempdir().unwrap();
    let cacert = server.data_dir.path().join("tls/dev-cert.pem");
    let kca = crate::cli::Kca::new(&server, Some(&admin));

    // HAProxy's and the backend's certificates, written by `kca certificates issue`.
    let issue = |profile: &'static str, base: &'static str, extra: &'static [&'static str]| {
        let kca = &kca;
        let base = dir.path().join(base).display().to_string();
        async move {
            kca.ok(
                &[&["certificates", "issue", "prod", profile, "--file", base.as_str()][..], extra].concat()
            )
            .await;
            let read = |ext: &str| std::fs::read_to_string(format!("{base}.{ext}")).unwrap();
            (read("crt"), read("key"))
        }
    };
    let (cert, key) = issue("apiserver", "haproxy-serving", &["--ip", "127.0.0.1"]).await;
    temp_file(dir.path(), "server.pem", format!("{cert}{key}").as_bytes());
    let (cert, key) = issue("front-proxy-client", "front-proxy", &[]).await;
    temp_file(dir.path(), "front-proxy-client.pem", format!("{cert}{key}").as_bytes());
    let (upstream_cert, upstream_key) = issue("apiserver", "upstream", &["--ip", "127.0.0.1"]).await;
    let control_plane_ca = kca.ok(&["authority-cert", "prod", "control-plane"]).await;
    temp_file(dir.path(), "control-plane-ca.pem", control_plane_ca.as_bytes());
    let aggregation_ca = kca.ok(&["authority-cert", "prod", "aggregation"]).await;

    // Alice's kubeconfig, signed by generation 1 of the operators CA.
    let alice_file = dir.path().join("alice.yaml");
    kca.ok(&["kubeconfig", "prod", "alice", "-g", "dev", "--file", alice_file.to_str().unwrap()]).await;
    let alice = identity_of_kubeconfig(&alice_file);

    let outputs = [
        "--ca-out",
        &dir.path().join("client-ca.pem").display().to_string(),
        "--crl-out",
        &dir.path().join("client-crl.pem").display().to_string(),
        "--map-out",
        &dir.path().join("revoked.map").display().to_string(),
    ]
    .map(String::from);
    let first = crl_sync(&server.url, Some(&cacert), &outputs, &[]).await;
    assert!(first.success, "{}", first.stderr);
    let backend_server = Upstream::start(&upstream_cert, &upstream_key, &aggregation_ca).await;
    let mut haproxy = Haproxy::start(dir.path(), backend_server.port, 4);
    let pid = haproxy.same_process();
    assert_eq!(fresh_request(&haproxy, &alice, &control_plane_ca).await, Some(200));
    assert_eq!(backend_server.last("x-remote-user"), ["alice"]);

    // Rotate and retire at once; what generation 1 signed is revoked.
    let ran = kca.run(&["authorities", "rotate", "prod", "operators", "--yes", "-o", "json"]).await;
    assert!(ran.success, "{}", ran.stderr);
    assert!(ran.stderr.contains("retired generation 1"), "{}", ran.stderr);
    let operators: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(operators["generation"], 2);
    assert_eq!(operators["generations"].as_array().unwrap().len(), 1, "{operators}");
    let alice_serial = crate::cli::certificates_of(&server, &admin, "alice").await[0]["serial"].clone();
    let shown =
        kca.json(&["certificates", "show", "prod", alice_serial.as_str().unwrap(), "-o", "json"]).await;
    assert_eq!(shown["status"], "revoked");
    // Bob's kubeconfig comes from generation 2. HAProxy knows nothing yet: alice still gets in.
    let bob_file = dir.path().join("bob.yaml");
    kca.ok(&["kubeconfig", "prod", "bob", "--file", bob_file.to_str().unwrap()]).await;
    let bob = identity_of_kubeconfig(&bob_file);
    assert_eq!(fresh_request(&haproxy, &alice, &control_plane_ca).await, Some(200));

    // One crl-sync pass through the runtime API: alice is refused, bob passes, same process.
    let runtime = [
        "--haproxy-socket".to_string(),
        haproxy.socket().display().to_string(),
        "--haproxy-crl-path".into(),
        dir.path().join("client-crl.pem").display().to_string(),
        "--haproxy-ca-path".into(),
        dir.path().join("client-ca.pem").display().to_string(),
        "--haproxy-map-path".into(),
        dir.path().join("revoked.map").display().to_string(),
    ];
    let synced = crl_sync(&server.url, Some(&cacert), &outputs, &runtime).await;
    assert!(synced.success, "{}", synced.stderr);
    assert_eq!(haproxy.same_process(), pid);
    assert_eq!(fresh_request(&haproxy, &alice, &control_plane_ca).await, None);
    assert_eq!(fresh_request(&haproxy, &bob, &control_plane_ca).await, Some(200));
    assert_eq!(backend_server.last("x-remote-user"), ["bob"]);
}
