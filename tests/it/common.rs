//! The test harness: a real kca server on a loopback TLS socket, over a fresh SQLite file or a
//! fresh Postgres database, and a client that trusts its certificate.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use kca::app::AppState;
use kca::config::{ServeArgs, StoreArgs};
use kca::server::Application;
use kca::token::{Scope, TokenRequest};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;

/// The Postgres the tests create their databases in.
pub fn postgres_admin_url() -> String {
    std::env::var("KCA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A throwaway Postgres database, dropped with this value.
pub struct PgDatabase {
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub fn create() -> Self {
        let name = format!("kca_test_{}", uuid::Uuid::new_v4().simple());
        psql(&format!("CREATE DATABASE {name}"));
        let admin = postgres_admin_url();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base).to_string();
        Self { url: format!("{base}/{name}"), name }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

fn psql(sql: &str) {
    let output = Command::new("psql")
        .args([&postgres_admin_url(), "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .expect("psql runs");
    assert!(output.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&output.stderr));
}

/// Every response body the client saw, to scan for key material at the end of a test.
#[derive(Clone, Default)]
pub struct Transcript(Arc<Mutex<Vec<(String, String)>>>);

impl Transcript {
    pub fn assert_no_private_key(&self) {
        self.assert_no_private_key_except("\u{0}");
    }

    /// As above, but for requests whose path contains `allowed` (the one endpoint that hands a
    /// user their own new key).
    pub fn assert_no_private_key_except(&self, allowed: &str) {
        for (request, body) in self.0.lock().unwrap().iter() {
            if !request.contains(allowed) {
                assert!(!body.contains("PRIVATE KEY"), "{request} answered with private key material");
            }
        }
    }

    /// The first request whose answer contains `needle`.
    pub fn find(&self, needle: &str) -> Option<String> {
        self.0.lock().unwrap().iter().find(|(_, body)| body.contains(needle)).map(|(r, _)| r.clone())
    }
}

pub struct TestServer {
    pub url: String,
    pub app: AppState,
    pub data_dir: TempDir,
    pub database: Option<PgDatabase>,
    pub client: reqwest::Client,
    pub transcript: Transcript,
    handle: axum_server::Handle<std::net::SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// The arguments `kca serve` would get, pointing at `data_dir` and `database_url`.
pub fn serve_args(data_dir: &std::path::Path, database_url: Option<String>) -> ServeArgs {
    ServeArgs {
        store: StoreArgs {
            data_dir: data_dir.to_path_buf(),
            database_url,
            database_url_file: None,
            database_max_connections: 8,
            master_key_file: None,
            master_key: None,
            master_key_version: 1,
            token_issuer: "kca".into(),
            token_audience: "kca".into(),
            token_max_lifetime: std::time::Duration::from_secs(90 * 86_400),
            pkcs11: Default::default(),
        },
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert: None,
        tls_key: None,
        http: false,
        public_read: true,
        crl_validity: std::time::Duration::from_secs(7 * 86_400),
        request_timeout: std::time::Duration::from_secs(30),
        issue_rate_limit: 0,
        cors_origins: vec![],
        oidc: Default::default(),
    }
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut ServeArgs)) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let database = (backend == Backend::Postgres).then(PgDatabase::create);
        Self::resume_with(data_dir, database, adjust).await
    }

    /// Start again on the data directory and database a stopped server left.
    pub async fn resume(data_dir: TempDir, database: Option<PgDatabase>) -> Self {
        Self::resume_with(data_dir, database, |_| {}).await
    }

    async fn resume_with(
        data_dir: TempDir,
        database: Option<PgDatabase>,
        adjust: impl FnOnce(&mut ServeArgs),
    ) -> Self {
        let mut args = serve_args(data_dir.path(), database.as_ref().map(|db| db.url.clone()));
        adjust(&mut args);
        let application = Application::build(&args).await.expect("the server starts");
        let url = format!("https://127.0.0.1:{}", application.local_addr().port());
        let app = application.state();
        let handle = application.handle();
        let task = tokio::spawn(application.run());
        let client = client_trusting(&data_dir.path().join("tls/dev-cert.pem"));
        Self { url, app, data_dir, database, client, transcript: Transcript::default(), handle, task }
    }

    /// A token with these scopes for every cluster.
    pub async fn token(&self, scopes: &[Scope]) -> String {
        self.token_for(scopes, &["*"]).await
    }

    /// A token limited to these clusters (names, resolved to ids now; a name with no cluster
    /// stands for one that does not exist).
    pub async fn token_for(&self, scopes: &[Scope], clusters: &[&str]) -> String {
        let mut ids = Vec::new();
        for name in clusters {
            ids.push(match *name {
                "*" => "*".to_string(),
                name => match self.app.store.find_cluster(name).await {
                    Ok(cluster) => cluster.id.to_string(),
                    Err(_) => uuid::Uuid::new_v4().to_string(),
                },
            });
        }
        self.mint(&TokenRequest {
            subject: "tester".into(),
            scopes: scopes.to_vec(),
            clusters: ids,
            groups: None,
            max_ttl: None,
            ttl: time::Duration::hours(1),
            person: None,
        })
        .await
    }

    /// Mint and register a token as `POST /v1/tokens` would.
    pub async fn mint(&self, request: &TokenRequest) -> String {
        let (token, _) = self
            .app
            .mint_token(request, "test-harness", |record| kca::store::AuditEntry {
                at: record.created_at,
                actor: "test-harness".into(),
                action: "token.create".into(),
                object_type: "token".into(),
                object_id: record.id.to_string(),
                cluster_id: None,
                remote_addr: None,
                details: serde_json::json!({}),
            })
            .await
            .unwrap();
        token
    }

    /// Send a request; answers the status, headers and body text, and records the body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut request = self.client.request(method.clone(), format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        self.transcript.0.lock().unwrap().push((format!("{method} {path}"), text.clone()));
        (status, headers, text)
    }

    /// Send and parse a JSON answer, asserting the status.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        expect: u16,
    ) -> Value {
        let (status, headers, text) = self.send(method.clone(), path, token, body).await;
        assert_eq!(status.as_u16(), expect, "{method} {path}: {text}");
        if status.is_client_error() || status.is_server_error() {
            assert_eq!(headers["content-type"], "application/problem+json", "{method} {path}");
        }
        if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() }
    }

    pub async fn create_cluster(&self, token: &str, name: &str) -> Value {
        self.json(
            Method::POST,
            "/v1/clusters",
            Some(token),
            Some(serde_json::json!({"name": name, "server": "https://k8s.example:6443"})),
            201,
        )
        .await
    }

    /// A cluster whose policy lets an admin token issue every component profile, for the names
    /// the tests use.
    pub async fn create_component_cluster(&self, token: &str, name: &str) -> Value {
        self.json(
            Method::POST,
            "/v1/clusters",
            Some(token),
            Some(serde_json::json!({
                "name": name,
                "server": "https://k8s.example:6443",
                "policy": component_policy(),
            })),
            201,
        )
        .await
    }

    pub fn database_url(&self) -> String {
        match &self.database {
            Some(db) => db.url.clone(),
            None => format!("sqlite://{}", self.data_dir.path().join("kca.db").display()),
        }
    }

    /// Stop serving (gracefully), keeping the data directory and database.
    pub async fn stop(self) -> (TempDir, Option<PgDatabase>) {
        self.handle.graceful_shutdown(Some(std::time::Duration::from_secs(1)));
        let _ = self.task.await;
        (self.data_dir, self.database)
    }
}

/// A client that trusts exactly the server's development certificate.
pub fn client_trusting(cert: &std::path::Path) -> reqwest::Client {
    let pem = std::fs::read(cert).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap()
}

/// Run `program` with `args`, asserting success; answers stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

pub fn temp_file(dir: &std::path::Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// Generate one test per backend from an `async fn(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            }
        )*
    };
}

/// The first certificate of a PEM text.
pub fn parse_certificate(pem_text: &str) -> x509_cert::Certificate {
    use der::Decode;
    let block = pem::parse(pem_text).expect("PEM");
    x509_cert::Certificate::from_der(block.contents()).expect("a DER certificate")
}

/// Every component profile allowed, with the control-plane and node names the tests use.
pub fn component_policy() -> Value {
    let profiles: Vec<&str> = kca::profiles::profiles().iter().map(|p| p.name).collect();
    serde_json::json!({
        "allowed_profiles": profiles,
        "control_plane_names": [
            "127.0.0.1", "localhost", "api.example.com", "e0", "m0.etcd.local", "m1.etcd.local",
            "m2.etcd.local", "cp-1", "cp-1.example.com", "10.0.0.10", "node-1.example.com", "10.0.0.7"
        ],
        "node_names": ["worker-*", "node-*", "10.0.0.*", "cp-*"],
    })
}

/// A free loopback port for a server a test starts after configuring its address elsewhere (a
/// provider whose issuer kca must know, a HAProxy backend, a replica). Taken below the kernel's
/// ephemeral range (32768–60999 by default): a port from `bind(":0")` lies in that range, and
/// until the server listens on it, any client socket the suite opens meanwhile (Postgres pools,
/// HTTP clients) may take it as its source port, and the server then fails to start.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    for _ in 0..100 {
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let port = 20_000 + (random % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 32000");
}
