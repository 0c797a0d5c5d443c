//! Serving: HTTPS (rustls, reloadable on SIGHUP) or plain HTTP when asked, graceful shutdown, and
//! the background tasks of a running server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum_server::Handle;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::RustlsConfig;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::app::{App, AppState, Settings, StartupError};
use crate::config::ServeArgs;

/// How the listener speaks.
#[derive(Debug, Clone)]
pub enum Transport {
    /// HTTPS from certificate files, reloaded on SIGHUP.
    Tls { cert: PathBuf, key: PathBuf },
    /// Plain HTTP, behind a TLS-terminating ingress.
    PlainHttp,
}

/// A built server: listening, not yet serving. Tests bind port 0 and read `local_addr`.
pub struct Application {
    app: AppState,
    listener: std::net::TcpListener,
    transport: Transport,
    handle: Handle<SocketAddr>,
}

impl Application {
    pub async fn build(args: &ServeArgs) -> Result<Self, StartupError> {
        let transport = match (&args.tls_cert, &args.tls_key, args.http) {
            (_, _, true) => Transport::PlainHttp,
            (Some(cert), Some(key), false) => Transport::Tls { cert: cert.clone(), key: key.clone() },
            _ => {
                let (cert, key, fingerprint) = crate::devcert::ensure(&args.store.data_dir).map_err(|e| {
                    StartupError::Other(format!("cannot create the development TLS certificate: {e}"))
                })?;
                tracing::warn!(
                    cert = %cert.display(),
                    fingerprint.sha256 = %fingerprint,
                    "serving HTTPS with a self-signed certificate for localhost; set KCA_TLS_CERT and KCA_TLS_KEY in production"
                );
                Transport::Tls { cert, key }
            }
        };
        let settings = Settings {
            public_read: args.public_read,
            crl_validity: args.crl_validity,
            request_timeout: args.request_timeout,
            issue_rate_limit: args.issue_rate_limit,
            cors_origins: args.cors_origins.clone(),
            hsts: matches!(transport, Transport::Tls { .. }),
            oidc: crate::oidc::OidcSettings::from_args(&args.oidc).map_err(StartupError::Other)?,
        };
        if let Some(oidc) = &settings.oidc {
            tracing::info!(oidc.issuer = %oidc.issuer, oidc.client_id = %oidc.client_id, "single sign-on enabled");
        }
        let app = App::open(&args.store, settings).await?;
        let listener = std::net::TcpListener::bind(args.listen)
            .map_err(|e| StartupError::Other(format!("cannot listen on {}: {e}", args.listen)))?;
        listener.set_nonblocking(true).map_err(|e| StartupError::Other(e.to_string()))?;
        Ok(Self { app, listener, transport, handle: Handle::new() })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn state(&self) -> AppState {
        self.app.clone()
    }

    /// A handle to stop the server (gracefully) from elsewhere, e.g. a test.
    pub fn handle(&self) -> Handle<SocketAddr> {
        self.handle.clone()
    }

    /// Serve until SIGTERM/SIGINT (or the handle) stops it; in-flight requests get 10 s to finish.
    pub async fn run(self) -> std::io::Result<()> {
        let Self { app, listener, transport, handle } = self;
        let service = crate::http::router(app.clone()).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(shutdown_on_signal(handle.clone()));
        let background = crate::background::start(app.clone());
        let address = listener.local_addr()?;
        // TCP_NODELAY: hyper writes each response whole, so Nagle could only hold back the tail of
        // a large CRL until the client acknowledged the rest.
        let served = match transport {
            Transport::PlainHttp => {
                tracing::info!(%address, "kca listening (plain HTTP)");
                axum_server::from_tcp(listener)?
                    .acceptor(NoDelayAcceptor::new())
                    .handle(handle)
                    .serve(service)
                    .await
            }
            Transport::Tls { cert, key } => {
                let config = RustlsConfig::from_config(Arc::new(load_tls(&cert, &key)?));
                tokio::spawn(reload_on_sighup(config.clone(), cert, key));
                tracing::info!(%address, "kca listening (HTTPS)");
                axum_server::from_tcp_rustls(listener, config)?
                    .map(|tls| tls.acceptor(NoDelayAcceptor::new()))
                    .handle(handle)
                    .serve(service)
                    .await
            }
        };
        for task in background {
            task.abort();
        }
        served
    }
}

/// A rustls server config from PEM files, with the aws-lc-rs provider and HTTP/2.
pub fn load_tls(cert: &Path, key: &Path) -> std::io::Result<ServerConfig> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| invalid(format!("{}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(format!("{}: {e}", key.display())))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| invalid(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

async fn reload_on_sighup(config: RustlsConfig, cert: PathBuf, key: PathBuf) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hangups.recv().await.is_some() {
        match load_tls(&cert, &key) {
            Ok(server_config) => {
                config.reload_from_config(Arc::new(server_config));
                tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
            }
            Err(err) => {
                tracing::error!(error = %err, "TLS reload failed; still serving the previous certificate")
            }
        }
    }
}

async fn shutdown_on_signal(handle: Handle<SocketAddr>) {
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    handle.graceful_shutdown(Some(Duration::from_secs(10)));
}

/// Resolves on SIGTERM or SIGINT; never when those cannot be listened for.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => {},
        _ = interrupt.recv() => {},
    }
}
