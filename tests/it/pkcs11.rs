//! CA keys in a PKCS#11 token: a real SoftHSM2 token, initialised per test in a temporary
//! directory, and real `kca serve` processes reaching it through `KCA_PKCS11_*`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::common::*;
use crate::replicas::{Deployment, Replica};

const TOKEN_LABEL: &str = "kca-test";
/// Distinctive, so that a PIN in a log line or an answer would be found.
const PIN: &str = "pin-7f3a9c21d4";

/// A SoftHSM2 token of its own: its configuration, token directory and PIN file.
pub struct SoftHsm {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub pin_file: PathBuf,
}

pub fn softhsm_module() -> &'static str {
    ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .expect("SoftHSM2 is installed (tests/run.sh installs softhsm2)")
}

impl SoftHsm {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = temp_file(
            dir.path(),
            "softhsm2.conf",
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            )
            .as_bytes(),
        );
        let output = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(["--init-token", "--free", "--label", TOKEN_LABEL, "--pin", PIN, "--so-pin", "so-pin-1234"])
            .output()
            .expect("softhsm2-util runs");
        assert!(
            output.status.success() && output.stderr.is_empty(),
            "softhsm2-util --init-token: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let pin_file = temp_file(dir.path(), "pin", format!("{PIN}\n").as_bytes());
        Self { dir, conf, pin_file }
    }

    /// The environment of a `kca serve` that keeps CA keys in this token.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SOFTHSM2_CONF", self.conf.display().to_string()),
            ("KCA_PKCS11_MODULE", softhsm_module().to_string()),
            ("KCA_PKCS11_TOKEN_LABEL", TOKEN_LABEL.to_string()),
            ("KCA_PKCS11_PIN_FILE", self.pin_file.display().to_string()),
        ]
    }

    /// `pkcs11-tool --list-objects`, logged in.
    pub fn list_objects(&self) -> String {
        let output = Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &self.conf)
            .args(["--module", softhsm_module(), "--token-label", TOKEN_LABEL, "--login", "--pin", PIN])
            .arg("--list-objects")
            .output()
            .expect("pkcs11-tool runs");
        assert!(output.status.success(), "pkcs11-tool: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    }
}

pub async fn start(deployment: &Deployment, name: &str, env: &[(&'static str, String)]) -> Replica {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    deployment.start_replica(name, &env).await
}

pub async fn get(deployment: &Deployment, replica: &Replica, path: &str) -> (u16, String) {
    let response = deployment.client.get(format!("{}{path}", replica.url)).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

pub async fn get_bytes(deployment: &Deployment, replica: &Replica, path: &str) -> (u16, Vec<u8>) {
    let response = deployment.client.get(format!("{}{path}", replica.url)).send().await.unwrap();
    (response.status().as_u16(), response.bytes().await.unwrap().to_vec())
}

/// `openssl verify` of a certificate against a CA bundle.
pub fn openssl_verify(scratch: &Path, bundle: &str, certificate: &str) {
    let ca = temp_file(scratch, "verify-ca.pem", bundle.as_bytes());
    let leaf = temp_file(scratch, "verify-leaf.pem", certificate.as_bytes());
    let out = run_ok("openssl", &["verify", "-CAfile", ca.to_str().unwrap(), leaf.to_str().unwrap()]);
    assert!(out.trim_end().ends_with(": OK"), "{out}");
}

/// `openssl crl -verify` of every CRL of an authority's `crl.pem` against the CA generation
/// that signed it (both soonest-expiring first); answers the CRLs' text.
pub fn openssl_crl_verify(scratch: &Path, bundle: &str, crls: &str) -> String {
    let cas = pem::parse_many(bundle).unwrap();
    let crls = pem::parse_many(crls).unwrap();
    assert_eq!(cas.len(), crls.len(), "one CRL per live generation");
    let mut text = String::new();
    for (ca, crl) in cas.iter().zip(&crls) {
        let ca_file =
            temp_file(scratch, "crl-ca.pem", kca::pki::to_pem("CERTIFICATE", ca.contents()).as_bytes());
        let crl_file = temp_file(scratch, "crl.pem", kca::pki::to_pem("X509 CRL", crl.contents()).as_bytes());
        let output = Command::new("openssl")
            .args(["crl", "-in", crl_file.to_str().unwrap(), "-CAfile", ca_file.to_str().unwrap()])
            .args(["-noout", "-verify", "-text"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success() && stderr.contains("verify OK"), "openssl crl -verify: {stderr}");
        text.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    text
}

fn assert_log_clean(replica: &Replica) {
    let log = std::fs::read_to_string(&replica.log).unwrap();
    assert!(!log.contains(PIN), "the PIN is in the server log");
    assert!(!log.contains("PRIVATE KEY"), "key material is in the server log");
}

async fn issue(
    deployment: &Deployment,
    replica: &Replica,
    token: &str,
    cluster: &str,
    user: &str,
) -> (u16, Value) {
    deployment
        .post(
            replica,
            &format!("/v1/clusters/{cluster}/kubeconfigs"),
            token,
            json!({"user": user, "groups": ["dev"]}),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_whose_cas_are_in_the_token_issues_what_openssl_verifies() {
    let hsm = SoftHsm::new();
    let scratch = tempfile::tempdir().unwrap();
    let deployment = Deployment::new(format!("sqlite://{}", hsm.dir.path().join("kca.db").display()));
    let replica = start(&deployment, "a", &hsm.env()).await;
    let admin = deployment.token("admin");

    let (status, cluster) = deployment
        .post(
            &replica,
            "/v1/clusters",
            &admin,
            json!({
                "name": "vault",
                "server": "https://k8s.example:6443",
                "policy": component_policy(),
                "key_storage": "pkcs11",
            }),
        )
        .await;
    assert_eq!(status, 201, "{cluster}");
    assert_eq!(cluster["key_storage"], "pkcs11");
    let authorities = cluster["authorities"].as_array().unwrap();
    assert_eq!(authorities.len(), 5);
    assert!(authorities.iter().all(|a| a["key_storage"] == "pkcs11"), "{cluster}");

    // Five key pairs in the token, each private key sensitive and never extractable.
    let objects = hsm.list_objects();
    let private: Vec<&str> = objects.split("Private Key Object").skip(1).collect();
    assert_eq!(private.len(), 5, "{objects}");
    for object in &private {
        let access = object.lines().find(|l| l.trim_start().starts_with("Access:")).unwrap();
        let flags: Vec<&str> = access.split(':').nth(1).unwrap().split(',').map(str::trim).collect();
        assert!(flags.contains(&"sensitive"), "CKA_SENSITIVE: {access}");
        assert!(!flags.contains(&"extractable"), "CKA_EXTRACTABLE: {access}");
        assert!(flags.contains(&"never extractable"), "{access}");
        assert!(object.contains("EC"), "{object}");
    }

    // A kubeconfig's certificate verifies against the operators bundle.
    let (status, issued) = issue(&deployment, &replica, &admin, "vault", "alice").await;
    assert_eq!(status, 201, "{issued}");
    let (_, bundle) = get(&deployment, &replica, "/v1/clusters/vault/authorities/operators/ca.pem").await;
    openssl_verify(scratch.path(), &bundle, issued["certificate_pem"].as_str().unwrap());
    let kubeconfig: Value = serde_norway::from_str(issued["kubeconfig"].as_str().unwrap()).unwrap();
    assert!(kubeconfig["users"][0]["user"]["client-certificate-data"].is_string());

    // A component certificate of another CA (etcd) too.
    let (status, etcd) = deployment
        .post(
            &replica,
            "/v1/clusters/vault/certificates",
            &admin,
            json!({"profile": "apiserver-etcd-client"}),
        )
        .await;
    assert_eq!(status, 201, "{etcd}");
    let (_, etcd_bundle) = get(&deployment, &replica, "/v1/clusters/vault/authorities/etcd/ca.pem").await;
    openssl_verify(scratch.path(), &etcd_bundle, etcd["certificate_pem"].as_str().unwrap());

    // Revocation re-signs the CRL in the token; openssl verifies it and finds the serial.
    let serial = issued["serial"].as_str().unwrap();
    let (status, revoked) = deployment
        .post(&replica, &format!("/v1/clusters/vault/certificates/{serial}/revoke"), &admin, json!({}))
        .await;
    assert_eq!(status, 200, "{revoked}");
    let (status, crls) = get(&deployment, &replica, "/v1/clusters/vault/authorities/operators/crl.pem").await;
    assert_eq!(status, 200);
    let text = openssl_crl_verify(scratch.path(), &bundle, &crls);
    assert!(text.to_uppercase().contains(&serial.to_uppercase()), "{text}");

    // Signatures in parallel: 32 issuances at once, on the session pool, all good.
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..32 {
        let request = deployment
            .client
            .post(format!("{}/v1/clusters/vault/kubeconfigs", replica.url))
            .bearer_auth(&admin)
            .json(&json!({"user": format!("burst-{i}")}));
        burst.spawn(async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        });
    }
    for (status, issued) in burst.join_all().await {
        assert_eq!(status, 201, "{issued}");
        openssl_verify(scratch.path(), &bundle, issued["certificate_pem"].as_str().unwrap());
    }

    // P-384 keys live in the token too; Ed25519 keys cannot, and are refused before anything is made.
    let body = json!({"name": "vault384", "server": "https://k8s.example:6443", "key_algorithm": "p384", "key_storage": "pkcs11"});
    assert_eq!(deployment.post(&replica, "/v1/clusters", &admin, body).await.0, 201);
    let (status, issued) = issue(&deployment, &replica, &admin, "vault384", "alice").await;
    assert_eq!(status, 201, "{issued}");
    let (_, bundle384) =
        get(&deployment, &replica, "/v1/clusters/vault384/authorities/operators/ca.pem").await;
    openssl_verify(scratch.path(), &bundle384, issued["certificate_pem"].as_str().unwrap());
    let (_, crls384) =
        get(&deployment, &replica, "/v1/clusters/vault384/authorities/operators/crl.pem").await;
    openssl_crl_verify(scratch.path(), &bundle384, &crls384);
    let body = json!({"name": "vault-ed", "server": "https://k8s.example:6443", "key_algorithm": "ed25519", "key_storage": "pkcs11"});
    let (status, problem) = deployment.post(&replica, "/v1/clusters", &admin, body).await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("key_storage")), "{problem}");
    assert_eq!(hsm.list_objects().matches("Private Key Object").count(), 10);

    assert_log_clean(&replica);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_refuses_the_pin_or_is_gone_stops_issuance_not_bundles_or_crls() {
    let hsm = SoftHsm::new();
    let deployment = Deployment::new(format!("sqlite://{}", hsm.dir.path().join("kca.db").display()));
    let mut replica = start(&deployment, "a", &hsm.env()).await;
    let admin = deployment.token("admin");
    let body = json!({"name": "vault", "server": "https://k8s.example:6443", "key_storage": "pkcs11"});
    assert_eq!(deployment.post(&replica, "/v1/clusters", &admin, body).await.0, 201);
    let body = json!({"name": "plain", "server": "https://k8s.example:6443"});
    assert_eq!(deployment.post(&replica, "/v1/clusters", &admin, body).await.0, 201);
    assert_eq!(issue(&deployment, &replica, &admin, "vault", "alice").await.0, 201);
    replica.kill();

    // The wrong PIN: the server starts, bundles and CRLs are served, issuance answers 503.
    std::fs::write(&hsm.pin_file, "0000-wrong-pin\n").unwrap();
    let replica = start(&deployment, "a", &hsm.env()).await;
    let response = deployment
        .client
        .post(format!("{}/v1/clusters/vault/kubeconfigs", replica.url))
        .bearer_auth(&admin)
        .json(&json!({"user": "bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: Value = response.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("refused the PIN"), "{detail}");
    assert!(!detail.contains("0000-wrong-pin") && !detail.contains(PIN), "{detail}");
    for path in [
        "/v1/clusters/vault/authorities/operators/crl.pem",
        "/v1/clusters/vault/authorities/operators/crl",
        "/v1/clusters/vault/authorities/operators/ca.pem",
        "/v1/clusters/vault/client-ca.pem",
    ] {
        assert_eq!(get(&deployment, &replica, path).await.0, 200, "{path}");
    }
    // A cluster whose keys are sealed is not affected.
    assert_eq!(issue(&deployment, &replica, &admin, "plain", "carol").await.0, 201);
    // The refused PIN is not presented again (a real token would lock it): a second request
    // fails the same way, and the log says so once, at warn, without the PIN.
    assert_eq!(issue(&deployment, &replica, &admin, "vault", "bob").await.0, 503);
    let log = std::fs::read_to_string(&replica.log).unwrap();
    let warnings = log.lines().filter(|l| l.contains("the PKCS#11 token cannot sign")).count();
    assert_eq!(warnings, 1, "{log}");
    assert!(log.lines().any(|l| l.contains("\"level\":\"WARN\"") && l.contains("refused the PIN")), "{log}");
    assert!(!log.contains("0000-wrong-pin"));
    assert_log_clean(&replica);

    // A revocation is recorded, and says its CRL could not be published.
    let (_, listed) = {
        let response = deployment
            .client
            .get(format!("{}/v1/clusters/vault/certificates?user=alice", replica.url))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    let serial = listed["items"][0]["serial"].as_str().unwrap_or_else(|| panic!("{listed}")).to_string();
    let revoke = format!("/v1/clusters/vault/certificates/{serial}/revoke");
    let (status, problem) = deployment.post(&replica, &revoke, &admin, json!({})).await;
    assert_eq!(status, 503, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("the revocation is recorded"), "{problem}");

    // The right PIN back in the file: issuance works again without a restart, and revoking
    // again publishes the CRL that lists the certificate.
    std::fs::write(&hsm.pin_file, format!("{PIN}\n")).unwrap();
    assert_eq!(issue(&deployment, &replica, &admin, "vault", "dave").await.0, 201);
    let (status, revoked) = deployment.post(&replica, &revoke, &admin, json!({})).await;
    assert_eq!(status, 200, "{revoked}");
    let (_, crl) = get_bytes(&deployment, &replica, "/v1/clusters/vault/authorities/operators/crl").await;
    let (_, entries) = crate::revocation::crl_facts(&crl);
    assert!(entries.iter().any(|e| e.eq_ignore_ascii_case(&serial)), "{entries:?}");
    drop(replica);

    // The module gone (the token removed): same.
    let mut env = hsm.env();
    env[1].1 = hsm.dir.path().join("no-such-module.so").display().to_string();
    let replica = start(&deployment, "a", &env).await;
    let (status, problem) = issue(&deployment, &replica, &admin, "vault", "erin").await;
    assert_eq!(status, 503, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("cannot load the PKCS#11 module"), "{problem}");
    for path in [
        "/v1/clusters/vault/authorities/operators/crl.pem",
        "/v1/clusters/vault/authorities/operators/ca.pem",
    ] {
        assert_eq!(get(&deployment, &replica, path).await.0, 200, "{path}");
    }
    assert_log_clean(&replica);
    drop(replica);

    // The token's directory deleted under a running server.
    let replica = start(&deployment, "a", &hsm.env()).await;
    assert_eq!(issue(&deployment, &replica, &admin, "vault", "frank").await.0, 201);
    std::fs::remove_dir_all(hsm.dir.path().join("tokens")).unwrap();
    let (status, problem) = issue(&deployment, &replica, &admin, "vault", "gina").await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(get(&deployment, &replica, "/v1/clusters/vault/authorities/operators/crl.pem").await.0, 200);
    assert_log_clean(&replica);
}

async fn rotate(deployment: &Deployment, replica: &Replica, token: &str, body: Value) -> Value {
    let (status, rotated) =
        deployment.post(replica, "/v1/clusters/moving/authorities/operators/rotate", token, body).await;
    assert_eq!(status, 200, "{rotated}");
    rotated
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_moves_a_ca_into_the_token_and_out_again() {
    let hsm = SoftHsm::new();
    let scratch = tempfile::tempdir().unwrap();
    let database = PgDatabase::create();
    let deployment = Deployment::new(database.url.clone());
    let replica = start(&deployment, "a", &hsm.env()).await;
    let admin = deployment.token("admin");
    let body = json!({"name": "moving", "server": "https://k8s.example:6443"});
    let (status, cluster) = deployment.post(&replica, "/v1/clusters", &admin, body).await;
    assert_eq!(status, 201);
    assert_eq!(cluster["key_storage"], "sealed");

    let check = |expected: &'static str| {
        let (deployment, replica, admin, scratch) = (&deployment, &replica, &admin, scratch.path());
        async move {
            let (status, issued) = issue(deployment, replica, admin, "moving", "alice").await;
            assert_eq!(status, 201, "{issued}");
            let (_, bundle) =
                get(deployment, replica, "/v1/clusters/moving/authorities/operators/ca.pem").await;
            openssl_verify(scratch, &bundle, issued["certificate_pem"].as_str().unwrap());
            let (_, crls) =
                get(deployment, replica, "/v1/clusters/moving/authorities/operators/crl.pem").await;
            openssl_crl_verify(scratch, &bundle, &crls);
            let (_, authority) = get(deployment, replica, "/v1/clusters/moving/authorities/operators").await;
            let authority: Value = serde_json::from_str(&authority).unwrap();
            assert_eq!(authority["key_storage"], expected, "{authority}");
        }
    };

    // Sealed → token: generation 2's key is made in the token.
    let rotated = rotate(&deployment, &replica, &admin, json!({"key_storage": "pkcs11"})).await;
    assert_eq!((rotated["generation"].as_i64(), rotated["key_storage"].as_str()), (Some(2), Some("pkcs11")));
    assert_eq!(hsm.list_objects().matches("Private Key Object").count(), 1);
    check("pkcs11").await;
    // A rotation that does not say stays where the current generation is.
    let rotated = rotate(&deployment, &replica, &admin, json!({})).await;
    assert_eq!((rotated["generation"].as_i64(), rotated["key_storage"].as_str()), (Some(3), Some("pkcs11")));
    // Token → sealed.
    let rotated = rotate(&deployment, &replica, &admin, json!({"key_storage": "sealed"})).await;
    assert_eq!((rotated["generation"].as_i64(), rotated["key_storage"].as_str()), (Some(4), Some("sealed")));
    let generations: Vec<&str> = rotated["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["key_storage"].as_str().unwrap())
        .collect();
    assert_eq!(generations, ["sealed", "pkcs11", "pkcs11", "sealed"]);
    check("sealed").await;

    // A master-key rewrap seals the sealed keys again and leaves the token's alone.
    let new_key = temp_file(deployment.dir.path(), "master-2.key", &[7u8; 32]);
    let output = deployment.host_command(
        &["keys", "rewrap"],
        &["--new-master-key-file", new_key.to_str().unwrap(), "--new-master-key-version", "2"],
    );
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}");
    // Generation 1 of the five CAs and generation 4 of operators; not generations 2 and 3.
    assert!(said.contains(": 6 CA keys"), "{said}");
    check("sealed").await;
    assert_log_clean(&replica);
}

/// A CA whose token is away must not hold up the re-signing of the other CAs' CRLs (HAProxy
/// refuses every client of a CA whose CRL expired). In process, with a token whose module is
/// missing: the cluster's aggregation CA (listed first) is marked as kept in the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crls_of_other_cas_are_re_signed_while_a_token_is_away() {
    use std::time::{Duration, Instant};
    let scratch = tempfile::tempdir().unwrap();
    let pin_file = temp_file(scratch.path(), "pin", b"1234\n");
    let module = scratch.path().join("missing-module.so");
    let server = TestServer::start_with(Backend::Sqlite, |args| {
        args.crl_validity = Duration::from_secs(4);
        args.store.pkcs11 = kca::config::Pkcs11Args {
            module: Some(module),
            token_label: Some(TOKEN_LABEL.into()),
            pin_file: Some(pin_file),
        };
    })
    .await;
    let draft = kca::clusters::ClusterDraft {
        name: "mixed".into(),
        server: "https://k8s.example:6443".into(),
        policy: Default::default(),
        labels: Default::default(),
        key_algorithm: kca::pki::KeyAlgorithm::P256,
        key_storage: kca::pki::KeyStorage::Sealed,
        imports: Vec::new(),
        service_account_key: None,
    };
    let mut built = kca::clusters::build_cluster(
        draft,
        Vec::new(),
        None,
        &server.app.keyring,
        server.app.now(),
        Duration::from_secs(4),
    )
    .unwrap();
    let aggregation =
        built.new.authorities.iter_mut().find(|a| a.kind == kca::pki::AuthorityKind::Aggregation).unwrap();
    aggregation.key_storage = kca::pki::KeyStorage::Pkcs11;
    aggregation.key_reference = Some(aggregation.id.to_string());
    let audit = kca::store::AuditEntry {
        at: server.app.now(),
        actor: "test".into(),
        action: "cluster.create".into(),
        object_type: "cluster".into(),
        object_id: "mixed".into(),
        cluster_id: Some(built.new.cluster.id),
        remote_addr: None,
        details: json!({}),
    };
    server.app.store.create_cluster(&built.new, &audit).await.unwrap();

    let crl_number = |kind: &'static str| {
        let server = &server;
        async move {
            let url = format!("{}/v1/clusters/mixed/authorities/{kind}/crl", server.url);
            let response = server.client.get(url).send().await.unwrap();
            assert_eq!(response.status(), 200, "{kind}");
            crate::revocation::crl_facts(&response.bytes().await.unwrap()).0
        }
    };
    let first = crl_number("etcd").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if crl_number("etcd").await > first {
            break;
        }
        assert!(Instant::now() < deadline, "the etcd CRL was not re-signed while the token was away");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The token-held CA's CRL is still served, as published.
    crl_number("aggregation").await;
    let token = server.token(&[kca::token::Scope::Admin]).await;
    let (status, _, body) = server
        .send(
            reqwest::Method::POST,
            "/v1/clusters/mixed/authorities/aggregation/rotate",
            Some(&token),
            Some(json!({"key_storage": "pkcs11"})),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cannot load the PKCS#11 module"), "{body}");
}

/// A backup of a cluster whose CAs are in the token restores only where the token is configured:
/// without it `kca restore` refuses before writing anything; with it the restored server signs
/// new CRLs in the token that verify with the original CA certificates, and issues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_with_token_keys_restores_only_with_the_token() {
    let hsm = SoftHsm::new();
    let scratch = tempfile::tempdir().unwrap();
    let deployment = Deployment::new(format!("sqlite://{}", hsm.dir.path().join("kca.db").display()));
    let replica = start(&deployment, "a", &hsm.env()).await;
    let admin = deployment.token("admin");
    let body = json!({"name": "vault", "server": "https://k8s.example:6443", "key_storage": "pkcs11"});
    assert_eq!(deployment.post(&replica, "/v1/clusters", &admin, body).await.0, 201);
    let (_, bundle) = get(&deployment, &replica, "/v1/clusters/vault/authorities/operators/ca.pem").await;
    let archive = scratch.path().join("kca.backup");
    let output = deployment.host_command(&["backup"], &["--out", archive.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    drop(replica);

    let master_key = deployment.dir.path().join("master.key");
    let target = scratch.path().join("restored");
    let restore = |env: &[(&'static str, String)]| {
        Command::new(env!("CARGO_BIN_EXE_kca"))
            .args(["restore", "--from", archive.to_str().unwrap(), "--data-dir", target.to_str().unwrap()])
            .args(["--master-key-file", master_key.to_str().unwrap()])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap()
    };
    let refused = restore(&[]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("KCA_PKCS11_MODULE"), "{said}");
    assert!(!target.join("kca.db").exists(), "a refused restore wrote a database");

    let restored = restore(&hsm.env());
    assert!(restored.status.success(), "{}", String::from_utf8_lossy(&restored.stderr));
    let restored_deployment = Deployment::new(format!("sqlite://{}", target.join("kca.db").display()));
    std::fs::copy(&master_key, restored_deployment.dir.path().join("master.key")).unwrap();
    let replica = start(&restored_deployment, "b", &hsm.env()).await;
    let (status, crls) =
        get(&restored_deployment, &replica, "/v1/clusters/vault/authorities/operators/crl.pem").await;
    assert_eq!(status, 200);
    openssl_crl_verify(scratch.path(), &bundle, &crls);
    let admin = restored_deployment.token("admin");
    let (status, issued) = issue(&restored_deployment, &replica, &admin, "vault", "alice").await;
    assert_eq!(status, 201, "{issued}");
    openssl_verify(scratch.path(), &bundle, issued["certificate_pem"].as_str().unwrap());
    assert_log_clean(&replica);
}
