//! A small mutual-TLS endpoint standing in for kube-apiserver: it trusts one client CA, serves
//! `/version`, and records the CN, Os and serial of every client certificate it accepts.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// Who connected: the client certificate's CN and O values, in order, and its serial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub common_name: String,
    pub organizations: Vec<String>,
    /// Uppercase hex, as kca writes serials.
    pub serial: String,
}

pub struct MtlsServer {
    pub peers: Arc<Mutex<Vec<Peer>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MtlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Bind a port first (the kubeconfig's server URL needs it), serve later.
pub async fn bind() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

pub fn serve(
    listener: tokio::net::TcpListener,
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> MtlsServer {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem.as_bytes()).map(|c| c.unwrap()).collect();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = peers.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                if let Some(certs) = tls.get_ref().1.peer_certificates() {
                    seen.lock().unwrap().push(peer_of(&certs[0]));
                }
                let service = service_fn(|_request| async {
                    let body = r#"{"major":"1","minor":"32","gitVersion":"v1.32.0-kca-test","platform":"linux/amd64"}"#;
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    MtlsServer { peers, task }
}

fn peer_of(cert: &CertificateDer<'_>) -> Peer {
    use der::Decode;
    use der::asn1::Utf8StringRef;
    let cert = x509_cert::Certificate::from_der(cert.as_ref()).unwrap();
    let serial = hex::encode_upper(cert.tbs_certificate.serial_number.as_bytes());
    let mut peer = Peer { common_name: String::new(), organizations: Vec::new(), serial };
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for atv in rdn.0.iter() {
            let value =
                Utf8StringRef::try_from(&atv.value).map(|s| s.as_str().to_string()).unwrap_or_default();
            match atv.oid.to_string().as_str() {
                "2.5.4.3" => peer.common_name = value,
                "2.5.4.10" => peer.organizations.push(value),
                _ => {}
            }
        }
    }
    peer
}
