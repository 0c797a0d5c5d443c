//! The `kca` client commands, run as the real binary against a real server, and the exec-plugin
//! kubeconfig run by real kubectl.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;
use crate::kubeconfigs::{serving_certificate, subject_of};
use crate::mtls;
use kca::pki::AuthorityKind;
use kca::token::Scope;

/// The `kca` binary with a private HOME and cache, talking to one server.
pub struct Kca {
    pub home: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    /// Must never appear in any output.
    secret: Option<String>,
}

pub struct Ran {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kca {
    /// Configured through KCA_URL, KCA_CACERT and (when given) KCA_TOKEN.
    pub fn new(server: &TestServer, token: Option<&str>) -> Self {
        let mut kca = Self::bare();
        kca.env.push(("KCA_URL".into(), server.url.clone()));
        kca.env.push(("KCA_CACERT".into(), dev_cert(server).display().to_string()));
        if let Some(token) = token {
            kca.env.push(("KCA_TOKEN".into(), token.into()));
            kca.secret = Some(token.into());
        }
        kca
    }

    /// Only PATH, HOME and the cache directory: nothing to find the server with.
    pub fn bare() -> Self {
        let home = tempfile::tempdir().unwrap();
        let env = vec![
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
            ("HOME".into(), home.path().display().to_string()),
            ("KCA_CACHE_DIR".into(), home.path().join("cache").display().to_string()),
        ];
        Self { home, env, secret: None }
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.home.path().join("cache")
    }

    pub async fn run(&self, args: &[&str]) -> Ran {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env = self.env.clone();
        let output: Output = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_kca"))
                .args(&args)
                .env_clear()
                .envs(env)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let ran = Ran {
            success: output.status.success(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        };
        if let Some(secret) = &self.secret {
            assert!(!ran.stdout.contains(secret) && !ran.stderr.contains(secret), "the token was printed");
        }
        ran
    }

    /// Run, assert success, answer stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let ran = self.run(args).await;
        assert!(ran.success, "kca {args:?} failed: {}", ran.stderr);
        ran.stdout
    }

    /// Run, assert failure, answer stderr.
    pub async fn fails(&self, args: &[&str]) -> String {
        let ran = self.run(args).await;
        assert!(!ran.success, "kca {args:?} succeeded: {}", ran.stdout);
        assert!(ran.stderr.starts_with("kca: "), "{}", ran.stderr);
        ran.stderr
    }

    pub async fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("kca {args:?}: {e}: {out}"))
    }
}

pub fn dev_cert(server: &TestServer) -> PathBuf {
    server.data_dir.path().join("tls/dev-cert.pem")
}

pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The `detail` the server answers to a request, to compare with what the CLI shows.
pub async fn detail(
    server: &TestServer,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> String {
    let (status, headers, text) = server.send(method, path, Some(token), body).await;
    assert!(status.is_client_error(), "{path}: {status}");
    assert_eq!(headers["content-type"], "application/problem+json");
    let problem: Value = serde_json::from_str(&text).unwrap();
    problem["detail"].as_str().unwrap().to_string()
}

pub async fn certificates_of(server: &TestServer, token: &str, user: &str) -> Vec<Value> {
    let path = format!("/v1/clusters/prod/certificates?user={user}");
    let listed = server.json(Method::GET, &path, Some(token), None, 200).await;
    listed["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_clusters_and_certificates_and_issues_kubeconfigs() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    let kca = Kca::new(&server, Some(&admin));

    // No token: a clear error, before anything is sent.
    let err = Kca::new(&server, None).fails(&["clusters", "list"]).await;
    assert!(err.contains("no API token") && err.contains("KCA_TOKEN"), "{err}");
    let err = Kca::bare().fails(&["clusters", "list"]).await;
    assert!(err.contains("KCA_URL"), "{err}");

    // Clusters: create (text and JSON), list, show.
    let created = kca
        .ok(&[
            "clusters",
            "create",
            "prod",
            "--server",
            "https://k8s.example:6443",
            "--label",
            "env=prod",
            "--max-ttl",
            "2h",
            "--allowed-group",
            "dev",
            "--allowed-group",
            "ops",
            "--allowed-group",
            "user-*",
        ])
        .await;
    assert!(created.lines().any(|l| l.starts_with("name:") && l.ends_with(" prod")), "{created}");
    assert!(created.contains("max_ttl_seconds:") && created.contains("7200"), "{created}");
    assert!(created.contains("operators") && created.contains("control-plane"), "{created}");
    let staging = kca
        .json(&[
            "clusters",
            "create",
            "staging",
            "--server",
            "https://staging.example:6443",
            "--key-algorithm",
            "ed25519",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(staging["name"], "staging");
    assert_eq!(staging["key_algorithm"], "ed25519");
    assert_eq!(staging["authorities"].as_array().unwrap().len(), 5);
    let duplicate = json!({"name": "prod", "server": "https://k8s.example:6443"});
    let expected = detail(&server, Method::POST, "/v1/clusters", &admin, Some(duplicate)).await;
    let err = kca.fails(&["clusters", "create", "prod", "--server", "https://k8s.example:6443"]).await;
    assert!(err.contains(&expected), "{err}");

    let table = kca.ok(&["clusters", "list"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME") && lines[0].contains("SERVER"));
    assert!(lines[1].starts_with("prod ") && lines[1].contains("https://k8s.example:6443"));
    assert!(lines[1].contains("env=prod"));
    assert!(lines[2].starts_with("staging ") && lines[2].contains("ed25519"));
    let listed = kca.json(&["clusters", "list", "-o", "json"]).await;
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["prod", "staging"]);
    let prod = kca.json(&["clusters", "show", "prod", "--output", "json"]).await;
    assert_eq!(prod["labels"], json!({"env": "prod"}));
    assert_eq!(prod["policy"]["max_ttl_seconds"], 7200);
    assert_eq!(prod["policy"]["allowed_groups"], json!(["dev", "ops", "user-*"]));
    assert_eq!(prod, server.json(Method::GET, "/v1/clusters/prod", Some(&admin), None, 200).await);
    let expected = detail(&server, Method::GET, "/v1/clusters/nowhere", &admin, None).await;
    let err = kca.fails(&["clusters", "show", "nowhere"]).await;
    assert_eq!(err.trim_end(), format!("kca: {expected}"));

    // A kubeconfig on stdout: CN and Os as asked, the key made locally and matching.
    let yaml = kca.ok(&["kubeconfig", "prod", "alice", "-g", "dev", "-g", "ops", "-t", "600"]).await;
    let kubeconfig: serde_norway::Value = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(kubeconfig["current-context"], "alice@prod");
    assert_eq!(kubeconfig["clusters"][0]["cluster"]["server"], "https://k8s.example:6443");
    let user = &kubeconfig["users"][0]["user"];
    let cert_pem =
        String::from_utf8(STANDARD.decode(user["client-certificate-data"].as_str().unwrap()).unwrap())
            .unwrap();
    let key_pem =
        String::from_utf8(STANDARD.decode(user["client-key-data"].as_str().unwrap()).unwrap()).unwrap();
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let cert = parse_certificate(&cert_pem);
    assert_eq!(subject_of(&cert), ("alice".to_string(), vec!["dev".to_string(), "ops".to_string()]));
    let validity = &cert.tbs_certificate.validity;
    let lifetime =
        validity.not_after.to_unix_duration().as_secs() - validity.not_before.to_unix_duration().as_secs();
    assert_eq!(lifetime, 600 + 300);
    let scratch = tempfile::tempdir().unwrap();
    let key_file = temp_file(scratch.path(), "alice.key", key_pem.as_bytes());
    let cert_file = temp_file(scratch.path(), "alice.pem", cert_pem.as_bytes());
    assert_eq!(
        run_ok("openssl", &["pkey", "-in", key_file.to_str().unwrap(), "-pubout"]),
        run_ok("openssl", &["x509", "-in", cert_file.to_str().unwrap(), "-noout", "-pubkey"])
    );
    let alice_serial = hex::encode_upper(cert.tbs_certificate.serial_number.as_bytes());

    // A kubeconfig in a file: mode 0600, nothing on stdout.
    let file = kca.home.path().join("kube/bob.yaml");
    let out =
        kca.ok(&["kubeconfig", "prod", "bob", "-g", "user-bob", "--file", file.to_str().unwrap()]).await;
    assert!(out.is_empty());
    assert_eq!(mode(&file), 0o600);
    let written: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written["current-context"], "bob@prod");
    assert!(written["users"][0]["user"]["client-key-data"].as_str().unwrap().len() > 100);

    // A policy refusal shows the server's detail and rule, and fails.
    let refused = json!({"user": "carol", "ttl_seconds": 3 * 3600});
    let expected =
        detail(&server, Method::POST, "/v1/clusters/prod/kubeconfigs", &admin, Some(refused)).await;
    let err = kca.fails(&["kubeconfig", "prod", "carol", "-t", "3h"]).await;
    assert!(err.contains(&expected) && err.contains("max_ttl_seconds"), "{err}");
    let err = kca.fails(&["kubeconfig", "prod", "carol", "-g", "admins"]).await;
    assert!(err.contains("allowed_groups"), "{err}");

    // The CA bundle, as the server serves it.
    let pem = kca.ok(&["authority-cert", "prod", "operators"]).await;
    let (_, _, served) =
        server.send(Method::GET, "/v1/clusters/prod/authorities/operators/ca.pem", None, None).await;
    assert_eq!(pem, served);
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let ca_file = kca.home.path().join("operators.pem");
    kca.ok(&["authority-cert", "prod", "operators", "--file", ca_file.to_str().unwrap()]).await;
    assert_eq!(std::fs::read_to_string(&ca_file).unwrap(), served);
    let expected =
        detail(&server, Method::GET, "/v1/clusters/prod/authorities/bogus/ca.pem", &admin, None).await;
    assert!(kca.fails(&["authority-cert", "prod", "bogus"]).await.contains(&expected));

    // Certificates: every page is followed (the server's page is 50).
    for i in 0..55 {
        let body = json!({"user": format!("user{i}"), "groups": [format!("user-{i}")]});
        server.json(Method::POST, "/v1/clusters/prod/kubeconfigs", Some(&admin), Some(body), 201).await;
    }
    let all = kca.json(&["certificates", "list", "prod", "-o", "json"]).await;
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 57);
    let mut serials: Vec<&str> = all.iter().map(|c| c["serial"].as_str().unwrap()).collect();
    serials.sort_unstable();
    serials.dedup();
    assert_eq!(serials.len(), 57);
    let table = kca.ok(&["certificates", "list", "prod", "--user", "alice"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    for column in ["SERIAL", "USER", "GROUPS", "NOT AFTER", "STATUS"] {
        assert!(lines[0].contains(column), "{table}");
    }
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[..3], [alice_serial.as_str(), "alice", "dev,ops"]);
    assert_eq!(row[4], "active");
    let none = kca.json(&["certificates", "list", "prod", "--status", "revoked", "-o", "json"]).await;
    assert_eq!(none, json!([]));

    let shown = kca.ok(&["certificates", "show", "prod", &alice_serial]).await;
    assert!(shown.lines().any(|l| l.starts_with("user:") && l.ends_with(" alice")), "{shown}");
    assert!(shown.lines().any(|l| l.starts_with("status:") && l.ends_with(" active")), "{shown}");
    let shown = kca.json(&["certificates", "show", "prod", &alice_serial.to_lowercase(), "-o", "json"]).await;
    assert_eq!(shown["serial"], alice_serial.as_str());
    assert_eq!(shown["certificate_pem"], cert_pem.as_str());

    // Revocation: one certificate, then every certificate of a user.
    let out = kca.ok(&["certificates", "revoke", "prod", &alice_serial, "--reason", "keyCompromise"]).await;
    assert!(out.starts_with(&format!("revoked {alice_serial}")), "{out}");
    let revoked = kca.json(&["certificates", "list", "prod", "--status", "revoked", "-o", "json"]).await;
    assert_eq!(revoked.as_array().unwrap().len(), 1);
    assert_eq!(revoked[0]["serial"], alice_serial.as_str());
    assert_eq!(revoked[0]["revocation_reason"], "keyCompromise");
    let answer = kca.json(&["revoke-user", "prod", "bob", "--reason", "superseded", "-o", "json"]).await;
    assert_eq!(answer["serials"].as_array().unwrap().len(), 1);
    let again = kca.ok(&["revoke-user", "prod", "bob"]).await;
    assert!(again.contains("no live certificate"), "{again}");

    // Delete: refused without --yes when there is no terminal to ask on.
    let err = kca.fails(&["clusters", "delete", "staging"]).await;
    assert!(err.contains("--yes"), "{err}");
    kca.ok(&["clusters", "delete", "staging", "--yes"]).await;
    let err = kca.fails(&["clusters", "show", "staging"]).await;
    assert!(err.contains("staging"), "{err}");

    // The config file: url, token and a cacert relative to it; env beats file, flags beat env.
    let configured = Kca::bare();
    let config_dir = configured.home.path().join(".config/kca");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::copy(dev_cert(&server), config_dir.join("kca-ca.pem")).unwrap();
    let config = format!("url: {}\ntoken: {admin}\ncacert: kca-ca.pem\n", server.url);
    let config_file = temp_file(&config_dir, "config.yaml", config.as_bytes());
    std::fs::set_permissions(&config_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let listed = configured.json(&["clusters", "list", "-o", "json"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let mut env_wins = Kca::bare();
    env_wins.home = configured.home;
    env_wins.env = configured.env.clone();
    env_wins.env.push(("KCA_URL".into(), "https://127.0.0.1:1".into()));
    env_wins.fails(&["clusters", "list"]).await;
    env_wins.ok(&["clusters", "list", "--url", &server.url]).await;
    let untrusting = Kca::new(&server, Some(&admin));
    let err = untrusting.fails(&["clusters", "list", "--cacert", ca_file.to_str().unwrap()]).await;
    assert!(err.contains("certificate"), "{err}");

    server.transcript.assert_no_private_key_except("/kubeconfigs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_runs_the_exec_plugin_and_reuses_its_cached_credential() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    let listener = mtls::bind().await;
    let apiserver_url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    server
        .json(
            Method::POST,
            "/v1/clusters",
            Some(&admin),
            Some(json!({"name": "prod", "server": apiserver_url})),
            201,
        )
        .await;
    let (cert, key) = serving_certificate(&server, "prod", AuthorityKind::ControlPlane).await;
    let operators =
        server.json(Method::GET, "/v1/clusters/prod/authorities/operators", None, None, 200).await;
    let apiserver = mtls::serve(listener, &cert, &key, operators["certificate_pem"].as_str().unwrap());

    // An issue-only token cannot read the cluster's server URL; --server stands in for it.
    let issuer = server.token(&[Scope::KubeconfigsIssue]).await;
    let kca = Kca::new(&server, Some(&issuer));
    let file = kca.home.path().join("kube/config");
    let file_arg = file.to_str().unwrap();
    let exec = ["kubeconfig", "prod", "alice", "-g", "dev", "-g", "ops", "--exec", "--file", file_arg];
    let err = kca.fails(&exec).await;
    assert!(err.contains("--server"), "{err}");
    kca.ok(&[&exec[..], &["--server", apiserver_url.as_str()][..]].concat()).await;
    let reader = Kca::new(&server, Some(&server.token(&[Scope::Read]).await));
    let read_file = reader.home.path().join("config");
    let with_read = [&exec[..8], &["--file", read_file.to_str().unwrap()][..]].concat();
    reader.ok(&with_read).await;
    assert_eq!(std::fs::read_to_string(&read_file).unwrap(), std::fs::read_to_string(&file).unwrap());

    // The kubeconfig runs this binary, never holds the token, and nothing was issued yet.
    assert_eq!(mode(&file), 0o600);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(&issuer) && !text.contains(&admin));
    let kubeconfig: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(kubeconfig["clusters"][0]["cluster"]["server"], apiserver_url.as_str());
    let exec_entry = &kubeconfig["users"][0]["user"]["exec"];
    assert_eq!(exec_entry["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(exec_entry["interactiveMode"], "Never");
    let binary = std::fs::canonicalize(env!("CARGO_BIN_EXE_kca")).unwrap();
    assert_eq!(exec_entry["command"], binary.to_str().unwrap());
    let args: Vec<&str> =
        exec_entry["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args[..8], ["kubeconfig", "prod", "alice", "--exec-credential", "-g", "dev", "-g", "ops"]);
    assert!(args.windows(2).any(|w| w == ["--url", server.url.as_str()]), "{args:?}");
    assert!(certificates_of(&server, &admin, "alice").await.is_empty());

    // kubectl runs the plugin with its own environment: the token, the CA and the cache.
    let kubectl = |kca_env: Vec<(String, String)>| {
        let file = file.clone();
        tokio::task::spawn_blocking(move || {
            let output = Command::new("kubectl")
                .args(["--kubeconfig", file.to_str().unwrap(), "get", "--raw", "/version"])
                .env_clear()
                .envs(kca_env)
                .output()
                .unwrap();
            assert!(output.status.success(), "kubectl: {}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8(output.stdout).unwrap()
        })
    };
    let version = kubectl(kca.env.clone()).await.unwrap();
    assert!(version.contains("v1.32.0-kca-test"), "{version}");
    let peers = apiserver.peers.lock().unwrap().clone();
    assert!(!peers.is_empty());
    assert!(peers.iter().all(|p| p.common_name == "alice" && p.organizations == ["dev", "ops"]));
    let issued = certificates_of(&server, &admin, "alice").await;
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0]["groups"], json!(["dev", "ops"]));

    // The second call is served from the cache: a new TLS client, no new certificate.
    let version = kubectl(kca.env.clone()).await.unwrap();
    assert!(version.contains("v1.32.0-kca-test"), "{version}");
    assert!(apiserver.peers.lock().unwrap().len() > peers.len());
    assert_eq!(certificates_of(&server, &admin, "alice").await.len(), 1);

    // The cache: the credential and the cluster's revoked list (read before reusing it), 0600
    // files in a 0700 directory, holding no token.
    let cache = kca.cache_dir();
    assert_eq!(mode(&cache), 0o700);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries[0].file_name().unwrap().to_str().unwrap().starts_with("exec-credential-"));
    assert!(entries[1].file_name().unwrap().to_str().unwrap().starts_with("revoked-"));
    for entry in &entries {
        assert_eq!(mode(entry), 0o600);
        assert!(!std::fs::read_to_string(entry).unwrap().contains(&issuer));
    }

    // The plugin itself, groups in another order: the same cached credential.
    let credential = kca.json(&["kubeconfig", "prod", "alice", "-g", "ops", "-g", "dev", "-x"]).await;
    assert_eq!(credential["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(credential["kind"], "ExecCredential");
    let status = &credential["status"];
    assert_eq!(status["clientCertificateData"], issued[0]["certificate_pem"]);
    assert!(status["clientKeyData"].as_str().unwrap().starts_with("-----BEGIN PRIVATE KEY-----"));
    let expires = time::OffsetDateTime::parse(
        status["expirationTimestamp"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let not_after = time::OffsetDateTime::parse(
        issued[0]["not_after"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(expires, not_after);
    assert_eq!(certificates_of(&server, &admin, "alice").await.len(), 1);

    // Another group set is another credential.
    kca.json(&["kubeconfig", "prod", "alice", "-g", "dev", "-x"]).await;
    assert_eq!(certificates_of(&server, &admin, "alice").await.len(), 2);
}

crate::on_both_backends!(the_cli_mints_lists_and_revokes_tokens);

async fn the_cli_mints_lists_and_revokes_tokens(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    let kca = Kca::new(&server, Some(&admin));
    let ran = kca
        .run(&["tokens", "create", "--subject", "ci", "--scope", "read", "--cluster", "prod", "--ttl", "10m"])
        .await;
    assert!(ran.success, "{}", ran.stderr);
    let minted = ran.stdout.trim().to_string();
    assert!(ran.stderr.contains("minted token"), "{}", ran.stderr);
    // The new token works, and only for prod.
    let ci = Kca::new(&server, Some(&minted));
    ci.ok(&["clusters", "show", "prod"]).await;
    let listed = kca.json(&["tokens", "list", "-o", "json"]).await;
    let record = listed.as_array().unwrap().iter().find(|t| t["subject"] == "ci").unwrap().clone();
    let id = record["id"].as_str().unwrap().to_string();
    assert!(kca.ok(&["tokens", "list"]).await.contains(&id));
    // Revoked: the next call with it fails with the server's reason.
    kca.ok(&["tokens", "revoke", &id]).await;
    assert!(ci.fails(&["clusters", "show", "prod"]).await.contains("revoked"));
    // A non-admin mints nothing; the signing key rotates and the old tokens keep working.
    assert!(ci.fails(&["tokens", "list"]).await.contains("kca: "));
    assert!(kca.ok(&["tokens", "rotate-key"]).await.contains('2'));
    kca.ok(&["tokens", "list"]).await;
}
