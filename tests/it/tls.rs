//! The listener: HTTPS from certificate files, reloaded on SIGHUP without dropping connections;
//! plain HTTP only when asked.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::free_port;

/// A self-signed serving certificate for 127.0.0.1 (cert, key) written under `dir`.
fn serving_pair(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let made = dir.join(name);
    let (cert, key, fingerprint) = kca::devcert::ensure(&made).unwrap();
    (cert, key, fingerprint)
}

/// The SHA-256 fingerprint of the certificate a fresh TLS connection is served.
fn served_fingerprint(port: u16) -> String {
    let output = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "localhost"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let pem = String::from_utf8_lossy(&output.stdout).to_string();
    let start = pem.find("-----BEGIN CERTIFICATE-----").expect("a certificate was served");
    let end = pem.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    let der = ::pem::parse(&pem[start..end]).unwrap().into_contents();
    kca::pki::fingerprint_sha256(&der)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_keeps_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, key_a, fingerprint_a) = serving_pair(dir.path(), "a");
    let (cert_b, key_b, fingerprint_b) = serving_pair(dir.path(), "b");
    assert_ne!(fingerprint_a, fingerprint_b);
    let live_cert = dir.path().join("tls.crt");
    let live_key = dir.path().join("tls.key");
    std::fs::copy(&cert_a, &live_cert).unwrap();
    std::fs::copy(&key_a, &live_key).unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kca"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--tls-cert")
        .arg(&live_cert)
        .arg("--tls-key")
        .arg(&live_key)
        .stderr(Stdio::from(std::fs::File::create(dir.path().join("kca.log")).unwrap()))
        .spawn()
        .unwrap();
    let pem = [std::fs::read(&cert_a).unwrap(), std::fs::read(&cert_b).unwrap()].concat();
    let client = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}/healthz");
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(&url).send().await.is_err() {
        assert!(Instant::now() < deadline, "kca did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served_fingerprint(port), fingerprint_a);

    // A connection opened before the reload, with a request half sent.
    let mut open = open_tls(port, &cert_a).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    open.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();

    std::fs::copy(&cert_b, &live_cert).unwrap();
    std::fs::copy(&key_b, &live_key).unwrap();
    assert!(Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_fingerprint(port) != fingerprint_b {
        assert!(Instant::now() < deadline, "the new certificate was not served after SIGHUP");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The request begun before the reload completes on its connection.
    open.write_all(b"Connection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    open.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(child.try_wait().unwrap().is_none(), "same process");

    // A bad file on reload keeps the working certificate.
    std::fs::write(&live_cert, b"not a certificate").unwrap();
    assert!(Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap().success());
    let log = || std::fs::read_to_string(dir.path().join("kca.log")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log().contains("TLS reload failed") {
        assert!(Instant::now() < deadline, "the failed reload was not logged: {}", log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served_fingerprint(port), fingerprint_b);
    assert!(log().contains("TLS certificate reloaded"), "{}", log());
    let _ = child.kill();
    let _ = child.wait();
}

/// A TLS connection to the server, trusting `cert`.
async fn open_tls(
    port: u16,
    cert: &std::path::Path,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(cert).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kca"))
        .args(["serve", "--http", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(response) = client.get(&url).send().await {
            assert_eq!(response.status(), 200);
            assert!(!response.headers().contains_key("strict-transport-security"));
            break;
        }
        assert!(Instant::now() < deadline, "kca --http did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!dir.path().join("tls").exists(), "no certificate made for plain HTTP");
    let _ = child.kill();
    let _ = child.wait();
}
