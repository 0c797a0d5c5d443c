//! The plugin end of go-plugin's automatic mutual TLS, which Terraform always uses.
//!
//! Terraform starts the plugin with its client certificate in `PLUGIN_CLIENT_CERT` (self-signed,
//! a CA certificate, a P-521 key in recent releases), reads one handshake line from the plugin's
//! stdout (`1|6|tcp|127.0.0.1:PORT|grpc|<the plugin's certificate, base64 DER>`), and connects
//! trusting that certificate alone. The plugin must in turn accept only Terraform: every TLS
//! connection must present exactly the certificate of `PLUGIN_CLIENT_CERT` and prove it holds
//! its key, and a connection without it is refused during the handshake.
//!
//! rustls on aws-lc-rs does the TLS (it verifies P-521 signatures; ring does not). The client
//! certificate is pinned, not path-validated: webpki would refuse Terraform's certificate as an
//! end entity because it is a CA, and a chain to "some certificate signed by it" is not what is
//! wanted anyway. tf-provider gets the accepted streams through `serve_incoming`.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use base64::Engine;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// go-plugin's handshake cookie for Terraform providers: its absence means a person started the
/// binary, not Terraform.
const MAGIC_COOKIE_KEY: &str = "TF_PLUGIN_MAGIC_COOKIE";
const MAGIC_COOKIE_VALUE: &str = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";
/// go-plugin's core protocol version and the Terraform plugin protocol served (tfplugin6).
const CORE_PROTOCOL_VERSION: u8 = 1;
const APP_PROTOCOL_VERSION: u8 = 6;
/// A TLS handshake that has not completed by then is dropped, so that a stalled peer holds no
/// task for long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve `provider` to the Terraform that started this process, over mutual TLS only.
pub async fn serve<P: tf_provider::DynamicProvider>(name: &str, provider: P) -> anyhow::Result<()> {
    if std::env::var(MAGIC_COOKIE_KEY).ok().as_deref() != Some(MAGIC_COOKIE_VALUE) {
        bail!(
            "this binary is a Terraform plugin: Terraform starts it (see the Terraform section of \
             kca's README.md for dev_overrides or a filesystem mirror); it is not meant to be run \
             directly"
        );
    }
    let client_pem = std::env::var("PLUGIN_CLIENT_CERT").unwrap_or_default();
    if client_pem.trim().is_empty() {
        bail!(
            "PLUGIN_CLIENT_CERT is not set: this plugin serves only over mutual TLS with the \
             client certificate Terraform passes there (Terraform 1.11+ always does)"
        );
    }
    let pinned = pinned_certificate(&client_pem)?;
    let identity = ServerIdentity::generate()?;
    let config = server_config(pinned, &identity)?;
    let listener = listen()?;
    let address = listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(listener)?;

    let (connections, incoming) = mpsc::channel(16);
    tokio::spawn(accept(listener, TlsAcceptor::from(Arc::new(config)), connections));
    println!("{}", handshake_line(address, &identity.certificate));
    io::Write::flush(&mut io::stdout())?;
    tf_provider::serve_incoming(name, provider, ReceiverStream::new(incoming)).await
}

/// The one certificate of `PLUGIN_CLIENT_CERT`, DER.
pub fn pinned_certificate(pem: &str) -> anyhow::Result<CertificateDer<'static>> {
    let mut certs = CertificateDer::pem_slice_iter(pem.as_bytes());
    let first = certs
        .next()
        .ok_or_else(|| anyhow!("PLUGIN_CLIENT_CERT holds no PEM certificate"))?
        .context("PLUGIN_CLIENT_CERT is not a PEM certificate")?;
    if certs.next().is_some() {
        bail!("PLUGIN_CLIENT_CERT holds more than one certificate; Terraform passes exactly one");
    }
    Ok(first)
}

/// The line go-plugin clients read on stdout: where to connect, and the certificate to trust
/// (base64 DER without padding, as go-plugin writes and reads it).
pub fn handshake_line(address: SocketAddr, certificate: &CertificateDer<'_>) -> String {
    format!(
        "{CORE_PROTOCOL_VERSION}|{APP_PROTOCOL_VERSION}|tcp|{address}|grpc|{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(certificate.as_ref())
    )
}

/// The plugin's own certificate and key, made fresh at each start, as go-plugin does: a
/// self-signed P-384 certificate for `localhost`, which the client trusts as its only root.
pub struct ServerIdentity {
    pub certificate: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl ServerIdentity {
    pub fn generate() -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::seconds(30);
        params.not_after = now + time::Duration::days(30);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "HashiCorp");
        params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
        // go-plugin's client puts this certificate in its root pool and Go accepts a leaf that is
        // itself a root. Unlike go-plugin's own (a CA certificate), it is an end entity, so that
        // webpki-based clients accept it too; no key usage extension, so that OpenSSL takes it as
        // self-signed.
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let certificate = params.self_signed(&key)?;
        Ok(Self {
            certificate: certificate.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }
}

fn aws_lc_rs() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// rustls on aws-lc-rs, TLS 1.2 and 1.3, HTTP/2 by ALPN (gRPC clients require it), and only
/// the pinned client certificate.
pub fn server_config(
    pinned: CertificateDer<'static>,
    identity: &ServerIdentity,
) -> anyhow::Result<rustls::ServerConfig> {
    let provider = aws_lc_rs();
    let verifier = PinnedClientCertificate::new(pinned, &provider);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(
            vec![identity.certificate.clone()],
            PrivateKeyDer::Pkcs8(identity.key.clone_key()),
        )?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Accepts exactly one client certificate, byte for byte, and checks the handshake signature
/// made with its key. A client without a certificate is refused (client auth is mandatory).
#[derive(Debug)]
pub struct PinnedClientCertificate {
    pinned: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedClientCertificate {
    pub fn new(pinned: CertificateDer<'static>, provider: &CryptoProvider) -> Self {
        Self { pinned, algorithms: provider.signature_verification_algorithms }
    }
}

impl ClientCertVerifier for PinnedClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hint: Go's TLS client then sends its one certificate whatever its issuer.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Public bytes compared: equality of a certificate leaks nothing worth a constant time.
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A free port on 127.0.0.1 in go-plugin's range (`PLUGIN_MIN_PORT`..=`PLUGIN_MAX_PORT`), else
/// one the kernel picks.
fn listen() -> anyhow::Result<TcpListener> {
    let bound = |var: &str| -> anyhow::Result<Option<u16>> {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(v.parse().with_context(|| format!("{var}={v:?}"))?)),
            _ => Ok(None),
        }
    };
    let listener = match (bound("PLUGIN_MIN_PORT")?, bound("PLUGIN_MAX_PORT")?) {
        (None, None) => TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?,
        (min, max) => {
            let (min, max) = (min.unwrap_or(1025), max.unwrap_or(u16::MAX));
            (min.min(max)..=min.max(max))
                .find_map(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).ok())
                .ok_or_else(|| anyhow!("no free port on 127.0.0.1 between {min} and {max}"))?
        }
    };
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Accept TCP connections and complete each TLS handshake on its own task; only connections
/// whose handshake succeeded (the pinned certificate, its key) reach the gRPC server.
async fn accept(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    connections: mpsc::Sender<io::Result<PluginConnection>>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                eprintln!("terraform-provider-kca: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, connections) = (acceptor.clone(), connections.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = connections.send(Ok(PluginConnection(tls))).await;
                }
                Ok(Err(e)) => eprintln!("terraform-provider-kca: refused a connection from {peer}: {e}"),
                Err(_) => eprintln!("terraform-provider-kca: TLS handshake from {peer} timed out"),
            }
        });
    }
}

/// A connection that passed the mutual TLS handshake.
pub struct PluginConnection(TlsStream<TcpStream>);

impl tonic::transport::server::Connected for PluginConnection {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for PluginConnection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for PluginConnection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client certificate like Terraform's: self-signed CA, P-521.
    fn terraform_like_client() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "HashiCorp");
        params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth, rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.self_signed(&key).unwrap();
        (cert.der().clone(), PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
    }

    /// One TLS 1.3 (or 1.2) exchange over a pipe: the server echoes a byte; Ok when it arrives.
    async fn exchange(
        pinned: CertificateDer<'static>,
        client_identity: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
        tls12: bool,
    ) -> Result<(), String> {
        let identity = ServerIdentity::generate().unwrap();
        let server = TlsAcceptor::from(Arc::new(server_config(pinned, &identity).unwrap()));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(identity.certificate.clone()).unwrap();
        let versions: &[&rustls::SupportedProtocolVersion] =
            if tls12 { &[&rustls::version::TLS12] } else { &[&rustls::version::TLS13] };
        let builder = rustls::ClientConfig::builder_with_provider(aws_lc_rs())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match client_identity {
            Some((cert, key)) => builder.with_client_auth_cert(vec![cert], key).unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let client = tokio_rustls::TlsConnector::from(Arc::new(config));
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server_side = tokio::spawn(async move {
            let mut tls = server.accept(a).await.map_err(|e| e.to_string())?;
            let mut byte = [0u8];
            tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
            tls.write_all(&byte).await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())
        });
        let client_side = async {
            let mut tls = client
                .connect(ServerName::try_from("localhost").unwrap(), b)
                .await
                .map_err(|e| e.to_string())?;
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            tls.write_all(b"x").await.map_err(|e| e.to_string())?;
            let mut byte = [0u8];
            tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
            Ok::<(), String>(())
        };
        let client_result = client_side.await;
        let server_result = server_side.await.unwrap();
        server_result.and(client_result)
    }

    #[tokio::test]
    async fn the_pinned_p521_certificate_is_accepted_over_tls13_and_tls12() {
        let (cert, key) = terraform_like_client();
        exchange(cert.clone(), Some((cert.clone(), key.clone_key())), false).await.unwrap();
        exchange(cert.clone(), Some((cert, key)), true).await.unwrap();
    }

    #[tokio::test]
    async fn a_connection_without_a_client_certificate_is_refused() {
        let (cert, _) = terraform_like_client();
        for tls12 in [false, true] {
            let err = exchange(cert.clone(), None, tls12).await.unwrap_err();
            assert!(
                err.contains("peer sent no certificates") || err.contains("CertificateRequired"),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn another_certificate_is_refused_even_with_the_same_subject() {
        let (pinned, _) = terraform_like_client();
        let (other, other_key) = terraform_like_client();
        for tls12 in [false, true] {
            let err = exchange(pinned.clone(), Some((other.clone(), other_key.clone_key())), tls12)
                .await
                .unwrap_err();
            assert!(err.contains("ApplicationVerificationFailure"), "{err}");
        }
    }

    #[test]
    fn plugin_client_cert_must_hold_exactly_one_certificate() {
        let (cert, _) = terraform_like_client();
        let one = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64::engine::general_purpose::STANDARD.encode(cert.as_ref())
        );
        assert_eq!(pinned_certificate(&one).unwrap().as_ref(), cert.as_ref());
        assert!(pinned_certificate(&format!("{one}{one}")).is_err());
        assert!(pinned_certificate("not pem").is_err());
    }

    #[test]
    fn the_handshake_line_is_go_plugins() {
        let line =
            handshake_line("127.0.0.1:4242".parse().unwrap(), &CertificateDer::from(vec![1u8, 2, 3, 4]));
        assert_eq!(line, "1|6|tcp|127.0.0.1:4242|grpc|AQIDBA");
    }
}
