//! Single sign-on against a real OpenID Provider (the certified `oidc-provider` npm package,
//! tests/oidc/provider.mjs) started on a loopback port over HTTPS with a CA made here: the browser
//! sign-in in headless Chromium, `kca login` with the device grant approved through the
//! provider's pages, refusals, sign-out, key rotation, and the provider going down.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;
use kca::config::OidcArgs;
use kca::token::Scope;

const CLIENT_SECRET: &str = "kca-test-client-secret";
/// The session lifetime of the device test (a renewal is due after half of it).
const SHORT_SESSION: Duration = Duration::from_secs(24);

/// The test organisation's private CA and the provider's serving certificate for 127.0.0.1.
struct IdpPki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &Path) -> IdpPki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "kca test identity provider CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "127.0.0.1");
    let cert = params.signed_by(&key, &ca).unwrap();
    IdpPki {
        ca: temp_file(dir, "idp-ca.pem", ca.pem().as_bytes()),
        cert: temp_file(dir, "idp-cert.pem", cert.pem().as_bytes()),
        key: temp_file(dir, "idp-key.pem", key.serialize_pem().as_bytes()),
    }
}

/// The provider, killed when dropped.
struct Idp {
    child: Child,
    /// Kept open: the provider may write more, and a closed pipe would end it.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Idp {
    fn start(port: u16, pki: &IdpPki, redirect_uri: &str) -> Self {
        Self::start_with(port, pki, redirect_uri, true)
    }

    fn start_with(port: u16, pki: &IdpPki, redirect_uri: &str, device_grant: bool) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        assert!(
            root.join("node_modules/oidc-provider/package.json").exists(),
            "tests/oidc/node_modules is missing: run `bash tests/run.sh --setup-only` once"
        );
        // Kept beside its certificate, and quoted if it does not start.
        let stderr_path = pki.cert.with_file_name(format!("idp-{port}.stderr"));
        let mut child = Command::new("node")
            .arg(root.join("provider.mjs"))
            .arg(port.to_string())
            .arg(&pki.cert)
            .arg(&pki.key)
            .arg(redirect_uri)
            .arg(CLIENT_SECRET)
            .env("OIDC_NO_DEVICE", if device_grant { "0" } else { "1" })
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).expect("the provider's stderr file"))
            .spawn()
            .expect("node starts");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        let started: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("the provider did not start: {line:?}; its stderr: {stderr}")
        });
        assert_eq!(started["issuer"], format!("https://127.0.0.1:{port}"));
        Self { child, _stdout: stdout }
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kca with single sign-on against a provider on `idp_port`, a cluster `dev` whose access rule
/// admits the provider group `platform`, and a cluster `hidden` that admits nobody from it.
async fn sso_server(idp_port: u16, pki: &IdpPki, dir: &Path) -> (TestServer, String) {
    sso_server_with(idp_port, pki, dir, |_| {}).await
}

async fn sso_server_with(
    idp_port: u16,
    pki: &IdpPki,
    dir: &Path,
    adjust: impl FnOnce(&mut OidcArgs),
) -> (TestServer, String) {
    let secret = temp_file(dir, "client-secret", CLIENT_SECRET.as_bytes());
    let mut oidc = OidcArgs {
        issuer: Some(format!("https://127.0.0.1:{idp_port}")),
        client_id: Some("kca".into()),
        client_secret_file: Some(secret),
        extra_ca_file: Some(pki.ca.clone()),
        ..OidcArgs::default()
    };
    adjust(&mut oidc);
    let server = TestServer::start_with(Backend::Sqlite, |args| args.oidc = oidc).await;
    let admin = server.token(&[Scope::Admin]).await;
    for (name, rules) in [
        (
            "dev",
            json!([{"idp_group": "platform", "groups": ["team-platform", "viewers"], "max_ttl_seconds": 28800}]),
        ),
        ("hidden", json!([{"idp_group": "sales", "groups": ["viewers"]}])),
    ] {
        server
            .json(
                Method::POST,
                "/v1/clusters",
                Some(&admin),
                Some(json!({"name": name, "server": "https://k8s.example:6443", "policy": {"access_rules": rules}})),
                201,
            )
            .await;
    }
    (server, admin)
}

fn out_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Run tests/browser/sso.mjs; panics with its output when it fails.
async fn browser(args: &[&str], kca_cert: &Path, idp_cert: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/sso.mjs");
    let mut command = Command::new("node");
    command.arg(script).args(args).env("KCA_CERT", kca_cert).env("IDP_CERT", idp_cert);
    let name = format!("node sso.mjs {}", args[0]);
    tokio::task::spawn_blocking(move || {
        let output = command.output().expect("node runs");
        let text =
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "{name} failed:\n{text}");
        text
    })
    .await
    .unwrap()
}

/// The CN and O entries of the kubeconfig's client certificate, as `kubectl config view` reads it.
fn kubeconfig_identity(path: &Path) -> (String, Vec<String>) {
    let view =
        run_ok("kubectl", &["config", "view", "--raw", "-o", "json", "--kubeconfig", path.to_str().unwrap()]);
    let view: Value = serde_json::from_str(&view).unwrap();
    let data = view["users"][0]["user"]["client-certificate-data"].as_str().expect("a client certificate");
    use base64::Engine;
    let pem = base64::engine::general_purpose::STANDARD.decode(data).unwrap();
    let cert = parse_certificate(std::str::from_utf8(&pem).unwrap());
    let mut cn = String::new();
    let mut groups = Vec::new();
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for atv in rdn.0.iter() {
            let value = der::asn1::Utf8StringRef::try_from(&atv.value)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| String::from_utf8_lossy(atv.value.value()).to_string());
            match atv.oid.to_string().as_str() {
                "2.5.4.3" => cn = value,
                "2.5.4.10" => groups.push(value),
                _ => {}
            }
        }
    }
    (cn, groups)
}

async fn audit_of(server: &TestServer, admin: &str, action: &str) -> Vec<Value> {
    let audit = server.json(Method::GET, "/v1/audit?limit=100", Some(admin), None, 200).await;
    audit["items"].as_array().unwrap().iter().filter(|e| e["action"] == action).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_with_chromium_through_the_provider_and_gets_their_own_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let idp_port = free_port();
    let (server, admin) = sso_server(idp_port, &pki, dir.path()).await;
    let idp = Idp::start(idp_port, &pki, &format!("{}/auth/callback", server.url));
    let kca_cert = server.data_dir.path().join("tls/dev-cert.pem");
    let out = out_dir("sso-browser");

    let log = browser(&["web", &server.url, out.to_str().unwrap(), "alice"], &kca_cert, &pki.cert).await;
    println!("{log}");

    // kubectl reads what the browser was given: CN = prefix + e-mail, groups from the rule.
    let (cn, groups) = kubeconfig_identity(&out.join("kubeconfig.yaml"));
    assert_eq!(cn, "oidc:alice@example.com");
    assert_eq!(groups, ["team-platform", "viewers"]);

    // The audit trail says who the provider vouched for, and which rule allowed the certificate.
    let issued = audit_of(&server, &admin, "certificate.issue").await;
    let sso = &issued[0]["details"]["sso"];
    assert_eq!(sso["idp_issuer"], format!("https://127.0.0.1:{idp_port}"));
    assert_eq!(sso["idp_subject"], "alice");
    assert_eq!(sso["rule"]["idp_group"], "platform");
    assert_eq!(issued[0]["actor"], "oidc:alice@example.com");
    let sessions = audit_of(&server, &admin, "session.create").await;
    assert_eq!(sessions[0]["details"]["idp_groups"], json!(["platform", "everyone"]));

    // Signed out in the browser: the old cookie is refused.
    let cookie = std::fs::read_to_string(out.join("session-cookie.txt")).unwrap();
    let refused = server
        .client
        .get(format!("{}/v1/me", server.url))
        .header("Cookie", format!("kca_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    // ... on the API only: the page and the sign-in still load, so the person can sign in again.
    let no_redirects = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(&kca_cert).unwrap()).unwrap()])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in ["/", "/auth/login"] {
        let page = no_redirects
            .get(format!("{}{path}", server.url))
            .header("Cookie", format!("kca_session={cookie}"))
            .send()
            .await
            .unwrap();
        assert!(page.status().is_success() || page.status() == 303, "{path}: {}", page.status());
    }
    drop(idp);
}

/// Run `kca login` (the command given), approve its device sign-in as alice in Chromium, and
/// wait for it to finish successfully.
async fn device_login(mut command: Command, idp_port: u16, out: &Path, kca_cert: &Path, idp_cert: &Path) {
    let mut login = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(login.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    let mut second = String::new();
    stderr.read_line(&mut second).unwrap();
    let url = first
        .trim()
        .strip_prefix("kca: to sign in, open ")
        .unwrap_or_else(|| panic!("{first:?}"))
        .to_string();
    assert!(url.starts_with(&format!("https://127.0.0.1:{idp_port}/device")), "{url}");
    assert!(second.contains("enter the code"), "{second:?}");
    let log = browser(&["device", &url, out.to_str().unwrap(), "alice"], kca_cert, idp_cert).await;
    println!("{log}");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = login.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "kca login did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(status.success(), "kca login failed: {rest}");
    assert!(rest.contains("signed in as oidc:alice@example.com"), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kca_login_uses_the_device_grant_and_the_session_issues_for_the_person() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let idp_port = free_port();
    // Short sessions, so that the test sees one renewed.
    let (server, _admin) = sso_server_with(idp_port, &pki, dir.path(), |oidc| {
        oidc.session_ttl = SHORT_SESSION;
    })
    .await;
    let mut idp = Idp::start(idp_port, &pki, &format!("{}/auth/callback", server.url));
    let kca_cert = server.data_dir.path().join("tls/dev-cert.pem");
    let home = tempfile::tempdir().unwrap();
    let out = out_dir("sso-device");
    let kca = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kca"));
        command
            .args(args)
            .env("KCA_URL", &server.url)
            .env("KCA_CACERT", &kca_cert)
            .env("XDG_CONFIG_HOME", home.path())
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .env_remove("KCA_TOKEN")
            .env_remove("KCA_CONFIG");
        command
    };

    // kca login prints where to go on stderr, and waits for the approval.
    device_login(kca(&["login"]), idp_port, &out, &kca_cert, &pki.cert).await;
    let logged_in = Instant::now();
    let session = home.path().join("kca/session.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&session).unwrap().permissions().mode() & 0o777, 0o600);

    // `kca kubeconfig CLUSTER` with no user issues for the signed-in person.
    let kubeconfig = out.join("kubeconfig.yaml");
    let output = kca(&["kubeconfig", "dev", "--file", kubeconfig.to_str().unwrap()]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let (cn, groups) = kubeconfig_identity(&kubeconfig);
    assert_eq!(
        (cn.as_str(), groups),
        ("oidc:alice@example.com", vec!["team-platform".to_string(), "viewers".to_string()])
    );

    // The --exec kubeconfig: kubectl runs kca, which uses the session.
    let exec = out.join("exec.yaml");
    let output = kca(&["kubeconfig", "dev", "--exec", "--file", exec.to_str().unwrap()]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let view = run_ok("kubectl", &["config", "view", "-o", "json", "--kubeconfig", exec.to_str().unwrap()]);
    let view: Value = serde_json::from_str(&view).unwrap();
    assert_eq!(view["users"][0]["name"], "oidc:alice@example.com");
    let exec_args: Vec<String> =
        serde_json::from_value(view["users"][0]["user"]["exec"]["args"].clone()).unwrap();
    let output = kca(&exec_args.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let credential: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(credential["status"]["clientCertificateData"].as_str().unwrap().contains("BEGIN CERTIFICATE"));

    // A cluster whose rules do not admit the person: 403.
    let output = kca(&["kubeconfig", "hidden"]).output().unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no access rule of cluster \"hidden\""),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Past half its lifetime, the session is renewed before it is used: a new token, the old one
    // revoked.
    let before: Value = serde_json::from_str(&std::fs::read_to_string(&session).unwrap()).unwrap();
    let half = SHORT_SESSION / 2 + Duration::from_secs(1);
    if let Some(wait) = half.checked_sub(logged_in.elapsed()) {
        tokio::time::sleep(wait).await;
    }
    let output = kca(&["kubeconfig", "dev", "--file", kubeconfig.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stderr.contains("session renewed until"), "{stderr}");
    let after: Value = serde_json::from_str(&std::fs::read_to_string(&session).unwrap()).unwrap();
    assert_ne!(before["token"], after["token"]);
    server.json(Method::GET, "/v1/me", before["token"].as_str(), None, 401).await;
    server.json(Method::GET, "/v1/me", after["token"].as_str(), None, 200).await;

    // The provider rotates its signing key (each start makes a new one): kca, which knows only
    // the old key, fetches the key set again on the unknown key id, and signing in works.
    drop(idp);
    idp = Idp::start(idp_port, &pki, &format!("{}/auth/callback", server.url));
    device_login(kca(&["login"]), idp_port, &out, &kca_cert, &pki.cert).await;
    drop(idp);

    // kca logout revokes the session: its token is refused afterwards.
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&session).unwrap()).unwrap();
    let token = stored["token"].as_str().unwrap().to_string();
    let output = kca(&["logout"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!session.exists());
    server.json(Method::GET, "/v1/me", Some(&token), None, 401).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_replayed_sign_ins_are_refused_and_the_provider_going_down_stops_only_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let idp_port = free_port();
    let (server, admin) = sso_server(idp_port, &pki, dir.path()).await;
    let redirect = format!("{}/auth/callback", server.url);
    let idp = Idp::start(idp_port, &pki, &redirect);
    let no_redirects = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(
            &std::fs::read(server.data_dir.path().join("tls/dev-cert.pem")).unwrap(),
        )
        .unwrap()])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // /auth/login redirects to the provider with PKCE S256, state and nonce, and sets the sealed
    // sign-in cookie.
    let start =
        no_redirects.get(format!("{}/auth/login?return_to=//evil.example", server.url)).send().await.unwrap();
    assert_eq!(start.status(), 303);
    let location = url::Url::parse(start.headers()["location"].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(&format!("https://127.0.0.1:{idp_port}/auth?")), "{location}");
    let query: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["redirect_uri"], redirect);
    assert!(query["state"].len() >= 32 && query["nonce"].len() >= 32);
    let login_cookie = start.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    assert!(login_cookie.starts_with("kca_login="));
    let callback = |query: String, cookie: Option<String>| {
        let mut request = no_redirects.get(format!("{}/auth/callback?{query}", server.url));
        if let Some(cookie) = cookie {
            request = request.header("Cookie", cookie);
        }
        request.send()
    };

    // A mismatched state, and a callback this browser never started: refused, with a page.
    let answer =
        callback(format!("code=x&state=not-{}", query["state"]), Some(login_cookie.clone())).await.unwrap();
    assert_eq!(answer.status(), 400);
    assert!(answer.text().await.unwrap().contains("state mismatch"));
    let answer = callback(format!("code=x&state={}", query["state"]), None).await.unwrap();
    assert_eq!(answer.status(), 400);
    // The state matches but the code is not one the provider gave: the provider refuses it, and the
    // state is used up, so replaying the same answer is refused by kca itself.
    let answer =
        callback(format!("code=forged&state={}", query["state"]), Some(login_cookie.clone())).await.unwrap();
    assert_eq!(answer.status(), 401, "{}", answer.text().await.unwrap());
    let answer =
        callback(format!("code=forged&state={}", query["state"]), Some(login_cookie.clone())).await.unwrap();
    assert_eq!(answer.status(), 400);
    assert!(answer.text().await.unwrap().contains("already been used"));

    // Through the provider's pages: bob (in "sales" only) sees only "hidden" and gets 403 on "dev";
    // mallory's e-mail claim carries a header injection, and kca refuses it as a user name.
    let kca_cert = server.data_dir.path().join("tls/dev-cert.pem");
    let out = out_dir("sso-refusals");
    browser(&["outsider", &server.url, out.to_str().unwrap(), "bob"], &kca_cert, &pki.cert).await;
    browser(&["refused", &server.url, out.to_str().unwrap(), "mallory"], &kca_cert, &pki.cert).await;

    // The same rules for a session minted here (bob, "sales" only): no cluster but "hidden", 403.
    let bob = server
        .mint(&kca::token::TokenRequest {
            subject: "oidc:bob@example.com".into(),
            scopes: kca::service::sessions::SESSION_SCOPES.to_vec(),
            clusters: vec!["*".into()],
            groups: None,
            max_ttl: None,
            ttl: time::Duration::hours(1),
            person: Some(kca::token::Person {
                iss: format!("https://127.0.0.1:{idp_port}"),
                sub: "bob".into(),
                user: "oidc:bob@example.com".into(),
                idp_groups: vec!["sales".into()],
                auth_time: 0,
            }),
        })
        .await;
    server.json(Method::POST, "/v1/clusters/dev/kubeconfigs", Some(&bob), Some(json!({})), 403).await;
    server.json(Method::GET, "/v1/clusters/dev", Some(&bob), None, 403).await;
    let visible = server.json(Method::GET, "/v1/clusters", Some(&bob), None, 200).await;
    assert_eq!(
        visible["items"].as_array().unwrap().iter().map(|c| c["name"].clone()).collect::<Vec<_>>(),
        [json!("hidden")]
    );
    let issued =
        server.json(Method::POST, "/v1/clusters/hidden/kubeconfigs", Some(&bob), Some(json!({})), 201).await;
    assert!(issued["kubeconfig"].as_str().unwrap().contains("oidc:bob@example.com"));
    // A person's token cannot name another user, reach a privileged group or exceed the rule.
    server
        .json(
            Method::POST,
            "/v1/clusters/hidden/kubeconfigs",
            Some(&bob),
            Some(json!({"user": "alice"})),
            403,
        )
        .await;
    server
        .json(
            Method::POST,
            "/v1/clusters/hidden/kubeconfigs",
            Some(&bob),
            Some(json!({"groups": ["system:masters"]})),
            403,
        )
        .await;
    server.json(Method::GET, "/v1/audit", Some(&bob), None, 403).await;

    // The provider goes down: sign-in answers a clear page; sessions and everything else work.
    drop(idp);
    let down = no_redirects.get(format!("{}/auth/login", server.url)).send().await.unwrap();
    assert_eq!(down.status(), 503);
    assert_eq!(down.headers()["content-type"], "text/html; charset=utf-8");
    let page = down.text().await.unwrap();
    assert!(page.contains("Sign-in is unavailable") && page.contains("cannot be reached"), "{page}");
    server.json(Method::POST, "/v1/clusters/hidden/kubeconfigs", Some(&bob), Some(json!({})), 201).await;
    server
        .json(Method::POST, "/v1/clusters/dev/kubeconfigs", Some(&admin), Some(json!({"user": "ops"})), 201)
        .await;
    let (status, _, _) =
        server.send(Method::GET, "/v1/clusters/dev/authorities/operators/ca.pem", None, None).await;
    assert_eq!(status, 200);
    server.json(Method::POST, "/v1/auth/device", None, None, 503).await;

    // Back up: the device grant works again.
    let _idp = Idp::start(idp_port, &pki, &redirect);
    let device = server.json(Method::POST, "/v1/auth/device", None, None, 200).await;
    assert!(
        device["verification_uri"].as_str().unwrap().starts_with(&format!("https://127.0.0.1:{idp_port}/"))
    );
    let pending = server
        .json(Method::POST, "/v1/auth/device/token", None, Some(json!({"handle": device["handle"]})), 202)
        .await;
    assert_eq!(pending["status"], "pending");
    server.json(Method::POST, "/v1/auth/device/token", None, Some(json!({"handle": "forged"})), 422).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kca_login_falls_back_to_a_loopback_redirect_when_the_provider_has_no_device_grant() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let idp_port = free_port();
    let (server, _admin) = sso_server(idp_port, &pki, dir.path()).await;
    let _idp = Idp::start_with(idp_port, &pki, &format!("{}/auth/callback", server.url), false);
    let kca_cert = server.data_dir.path().join("tls/dev-cert.pem");
    let home = tempfile::tempdir().unwrap();
    let out = out_dir("sso-loopback");
    let kca = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kca"));
        command
            .args(args)
            .env("KCA_URL", &server.url)
            .env("KCA_CACERT", &kca_cert)
            .env("XDG_CONFIG_HOME", home.path())
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .env_remove("KCA_TOKEN")
            .env_remove("KCA_CONFIG");
        command
    };
    // kca says the provider has no device grant, over the API too.
    let refused = server.json(Method::POST, "/v1/auth/device", None, None, 403).await;
    assert_eq!(refused["rule"], "device_grant_unavailable");

    let mut login = kca(&["login"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(login.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(first.contains("no device sign-in"), "{first:?}");
    let mut url = String::new();
    stderr.read_line(&mut url).unwrap();
    let url = url.trim().to_string();
    assert!(
        url.starts_with(&format!("{}/auth/login?cli_callback=http%3A%2F%2F127.0.0.1%3A", server.url)),
        "{url}"
    );
    let log = browser(&["loopback", &url, out.to_str().unwrap(), "alice"], &kca_cert, &pki.cert).await;
    println!("{log}");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = login.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "kca login did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(status.success(), "kca login failed: {rest}");
    assert!(rest.contains("signed in as oidc:alice@example.com"), "{rest}");

    let kubeconfig = out.join("kubeconfig.yaml");
    let output = kca(&["kubeconfig", "dev", "--file", kubeconfig.to_str().unwrap()]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(kubeconfig_identity(&kubeconfig).0, "oidc:alice@example.com");

    // A loopback callback that is not loopback is refused: kca is no open redirect.
    let (status, _, _) = server
        .send(Method::GET, "/auth/login?cli_callback=https%3A%2F%2Fevil.example%3A443%2F&cli_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", None, None)
        .await;
    assert_eq!(status, 422);
    // A code without the verifier of the CLI that started the sign-in is refused.
    server
        .json(Method::POST, "/v1/auth/cli/token", None, Some(json!({"code": "forged", "verifier": "x"})), 422)
        .await;
}
