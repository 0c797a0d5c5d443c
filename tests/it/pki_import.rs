//! Adopting a kubeadm PKI: an openssl-made `/etc/kubernetes/pki` imported with `kca clusters
//! import`; what kca issues afterwards verifies against the original CA files; the imported keys
//! appear in no answer and no database dump; bad imports are 422s that change nothing; and
//! revocation works for kubeadm's CAs (which lack cRLSign) through HAProxy.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;
use kca::token::Scope;

/// An openssl configuration with kubeadm's CA extensions, and `openssl ca` settings for the
/// expired CA.
fn openssl_config(dir: &Path) -> PathBuf {
    let d = dir.display();
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "01\n").unwrap();
    temp_file(
        dir,
        "openssl.cnf",
        format!(
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = placeholder\n\
             [kubeadm_ca]\nbasicConstraints = critical, CA:TRUE\n\
             keyUsage = critical, digitalSignature, keyEncipherment, keyCertSign\n\
             subjectKeyIdentifier = hash\n\
             [not_ca]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n\
             [leaf]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\n\
             extendedKeyUsage = serverAuth\nsubjectAltName = DNS:cp-1\nauthorityKeyIdentifier = keyid\n\
             [ca]\ndefault_ca = own\n[own]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}\nserial = {d}/serial\n\
             default_md = sha256\npolicy = anything\nunique_subject = no\n[anything]\ncommonName = supplied\n"
        )
        .as_bytes(),
    )
}

pub fn openssl(args: &[&str]) -> String {
    run_ok("openssl", args)
}

/// A key as kubeadm writes it: PKCS#1 RSA (`RSA PRIVATE KEY`) or SEC1 EC (`EC PRIVATE KEY`).
fn kubeadm_key(path: &Path, rsa: bool) {
    let out = path.to_str().unwrap();
    if rsa {
        openssl(&["genrsa", "-traditional", "-out", out, "2048"]);
    } else {
        openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", out]);
    }
}

/// A self-signed certificate for `key` with the extensions of `section`.
fn self_signed(config: &Path, key: &Path, cn: &str, section: &str, out: &Path) {
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-config",
        config.to_str().unwrap(),
        "-key",
        key.to_str().unwrap(),
        "-subj",
        &format!("/CN={cn}"),
        "-days",
        "3650",
        "-sha256",
        "-extensions",
        section,
        "-out",
        out.to_str().unwrap(),
    ]);
}

/// kubeadm's layout: `ca`, `front-proxy-ca`, `etcd/ca` (RSA, RSA, EC), `sa.key`/`sa.pub`.
fn kubeadm_pki(dir: &Path, config: &Path) -> PathBuf {
    let pki = dir.join("pki");
    std::fs::create_dir_all(pki.join("etcd")).unwrap();
    for (base, cn, rsa) in [
        ("ca", "kubernetes", true),
        ("front-proxy-ca", "front-proxy-ca", true),
        ("etcd/ca", "etcd-ca", false),
    ] {
        let key = pki.join(format!("{base}.key"));
        kubeadm_key(&key, rsa);
        self_signed(config, &key, cn, "kubeadm_ca", &pki.join(format!("{base}.crt")));
    }
    kubeadm_key(&pki.join("sa.key"), true);
    let sa = pki.join("sa.key");
    openssl(&["rsa", "-in", sa.to_str().unwrap(), "-pubout", "-out", pki.join("sa.pub").to_str().unwrap()]);
    pki
}

fn kca(server: &TestServer, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kca"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", server.data_dir.path())
        .env("KCA_URL", &server.url)
        .env("KCA_CACERT", server.data_dir.path().join("tls/dev-cert.pem"))
        .env("KCA_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `openssl verify` with these arguments: (passed, what it printed).
pub fn verify(args: &[&str]) -> (bool, String) {
    let output = Command::new("openssl").arg("verify").args(args).output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// The DER inside a PEM file, in upper-case hex (as the dumps write binary columns, upper-cased).
fn der_hex(path: &Path) -> String {
    let block = pem::parse(std::fs::read(path).unwrap()).unwrap();
    hex::encode_upper(block.contents())
}

async fn issue(server: &TestServer, admin: &str, body: Value, dir: &Path, name: &str) -> (Value, PathBuf) {
    let issued =
        server.json(Method::POST, "/v1/clusters/adopted/certificates", Some(admin), Some(body), 201).await;
    let cert = temp_file(dir, &format!("{name}.crt"), issued["certificate_pem"].as_str().unwrap().as_bytes());
    temp_file(dir, &format!("{name}.key"), issued["private_key_pem"].as_str().unwrap().as_bytes());
    (issued, cert)
}

crate::on_both_backends!(a_kubeadm_pki_is_adopted_and_what_kca_issues_verifies_against_the_original_cas);

/// Everything the database holds, as text: `sqlite3 .dump` (blobs in hex) or `pg_dump` (bytea in
/// hex), upper-cased.
fn database_dump(server: &TestServer, backend: Backend) -> String {
    match backend {
        Backend::Postgres => run_ok("pg_dump", &[&server.database_url()]),
        Backend::Sqlite => {
            run_ok("sqlite3", &[server.data_dir.path().join("kca.db").to_str().unwrap(), ".dump"])
        }
    }
    .to_uppercase()
}

async fn a_kubeadm_pki_is_adopted_and_what_kca_issues_verifies_against_the_original_cas(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token(&[Scope::Admin]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let config = openssl_config(path);
    let pki = kubeadm_pki(path, &config);
    let file = |name: &str| pki.join(name).to_str().unwrap().to_string();

    // A narrower token cannot import: creating a cluster with CAs takes an admin.
    let writer = server.token(&[Scope::ClustersWrite]).await;
    let refused = kca(
        &server,
        &writer,
        &[
            "clusters",
            "import",
            "adopted",
            "--server",
            "https://cp-1.example.com:6443",
            "--pki-dir",
            &file(""),
        ],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("admin"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    server.json(Method::GET, "/v1/clusters/adopted", Some(&admin), None, 404).await;

    // One call creates the cluster with the three kubeadm CAs; operators and kubelet are fresh.
    let imported = kca(
        &server,
        &admin,
        &[
            "clusters",
            "import",
            "adopted",
            "--server",
            "https://cp-1.example.com:6443",
            "--pki-dir",
            &file(""),
            "-o",
            "json",
        ],
    );
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    let cluster: Value = serde_json::from_slice(&imported.stdout).unwrap();
    assert_eq!(cluster["authorities"].as_array().unwrap().len(), 5);
    server
        .json(
            Method::PATCH,
            "/v1/clusters/adopted",
            Some(&admin),
            Some(json!({"policy": component_policy()})),
            200,
        )
        .await;

    // The bundles serve each kubeadm CA under its own subject and key, with cRLSign added.
    let mut bundles = std::collections::BTreeMap::new();
    for (kind, base) in [("control-plane", "ca"), ("aggregation", "front-proxy-ca"), ("etcd", "etcd/ca")] {
        let (_, _, bundle) = server
            .send(Method::GET, &format!("/v1/clusters/adopted/authorities/{kind}/ca.pem"), None, None)
            .await;
        let served = parse_certificate(&bundle);
        let original = parse_certificate(&std::fs::read_to_string(pki.join(format!("{base}.crt"))).unwrap());
        assert_eq!(served.tbs_certificate.subject, original.tbs_certificate.subject, "{kind}");
        assert_eq!(
            served.tbs_certificate.subject_public_key_info,
            original.tbs_certificate.subject_public_key_info
        );
        let served_file = temp_file(path, &format!("{kind}-bundle.pem"), bundle.as_bytes());
        let text = openssl(&["x509", "-noout", "-ext", "keyUsage", "-in", served_file.to_str().unwrap()]);
        assert!(text.contains("CRL Sign") && text.contains("Certificate Sign"), "{kind}: {text}");
        bundles.insert(kind, bundle);
    }

    // What kca issues now verifies against the ORIGINAL files.
    let mut leaves = Vec::new();
    for (name, body, original) in [
        ("scheduler", json!({"profile": "scheduler"}), "ca.crt"),
        ("controller-manager", json!({"profile": "controller-manager"}), "ca.crt"),
        (
            "apiserver",
            json!({"profile": "apiserver", "dns_names": ["cp-1"], "ip_addresses": ["10.0.0.10"]}),
            "ca.crt",
        ),
        ("front-proxy-client", json!({"profile": "front-proxy-client"}), "front-proxy-ca.crt"),
        ("apiserver-etcd-client", json!({"profile": "apiserver-etcd-client"}), "etcd/ca.crt"),
        (
            "etcd-server",
            json!({"profile": "etcd-server", "common_name": "cp-1", "dns_names": ["cp-1"]}),
            "etcd/ca.crt",
        ),
    ] {
        let (issued, cert) = issue(&server, &admin, body, path, name).await;
        let (ok, text) = verify(&["-CAfile", &file(original), cert.to_str().unwrap()]);
        assert!(ok, "{name} against the original {original}: {text}");
        leaves.push((name, issued, cert));
    }
    // And what the original CA signed before still verifies under what kca serves.
    let old_key = path.join("old-apiserver.key");
    kubeadm_key(&old_key, true);
    let csr = path.join("old-apiserver.csr");
    openssl(&[
        "req",
        "-new",
        "-config",
        config.to_str().unwrap(),
        "-key",
        old_key.to_str().unwrap(),
        "-subj",
        "/CN=kube-apiserver",
        "-out",
        csr.to_str().unwrap(),
    ]);
    let old = path.join("old-apiserver.crt");
    openssl(&[
        "x509",
        "-req",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        &file("ca.crt"),
        "-CAkey",
        &file("ca.key"),
        "-CAcreateserial",
        "-days",
        "365",
        "-extfile",
        config.to_str().unwrap(),
        "-extensions",
        "leaf",
        "-out",
        old.to_str().unwrap(),
    ]);
    let served_cp = temp_file(path, "served-control-plane.pem", bundles["control-plane"].as_bytes());
    let (ok, text) = verify(&["-CAfile", served_cp.to_str().unwrap(), old.to_str().unwrap()]);
    assert!(ok, "a kubeadm-era certificate under the served bundle: {text}");

    // `kca pki renew` takes over kubeadm's own certificate: same RSA key and names, now signed
    // by kca, still under the original ca.crt.
    let etc = path.join("etc-kubernetes");
    std::fs::create_dir_all(etc.join("pki")).unwrap();
    std::fs::copy(&old, etc.join("pki/apiserver.crt")).unwrap();
    std::fs::copy(&old_key, etc.join("pki/apiserver.key")).unwrap();
    let renewed =
        kca(&server, &admin, &["pki", "renew", "adopted", "apiserver", "--dir", etc.to_str().unwrap()]);
    assert!(renewed.status.success(), "{}", String::from_utf8_lossy(&renewed.stderr));
    let renewed_cert = etc.join("pki/apiserver.crt");
    let (ok, text) = verify(&["-CAfile", &file("ca.crt"), renewed_cert.to_str().unwrap()]);
    assert!(ok, "the renewed apiserver certificate against the original ca.crt: {text}");
    let pubkey = |args: &[&str]| openssl(args);
    assert_eq!(
        pubkey(&["x509", "-in", renewed_cert.to_str().unwrap(), "-noout", "-pubkey"]),
        pubkey(&["pkey", "-in", old_key.to_str().unwrap(), "-pubout"]),
        "the same key"
    );
    let sans = openssl(&["x509", "-in", renewed_cert.to_str().unwrap(), "-noout", "-ext", "subjectAltName"]);
    assert!(sans.contains("DNS:cp-1") && sans.contains("DNS:kubernetes.default.svc.cluster.local"), "{sans}");
    assert_ne!(std::fs::read(&renewed_cert).unwrap(), std::fs::read(&old).unwrap());

    // Revocation: the CRL of a CA without cRLSign is refused by OpenSSL against the original
    // certificate, and accepted against the served one.
    let (revoked_name, revoked, revoked_cert) = &leaves[1];
    assert_eq!(*revoked_name, "controller-manager");
    server
        .json(
            Method::POST,
            &format!("/v1/clusters/adopted/certificates/{}/revoke", revoked["serial"].as_str().unwrap()),
            Some(&admin),
            Some(json!({"reason": "keyCompromise"})),
            200,
        )
        .await;
    let (_, _, crl) =
        server.send(Method::GET, "/v1/clusters/adopted/authorities/control-plane/crl.pem", None, None).await;
    let crl = temp_file(path, "control-plane-crl.pem", crl.as_bytes());
    let good_cert = &leaves[0].2;
    let (ok, text) = verify(&[
        "-crl_check",
        "-CAfile",
        &file("ca.crt"),
        "-CRLfile",
        crl.to_str().unwrap(),
        good_cert.to_str().unwrap(),
    ]);
    assert!(!ok && text.contains("CRL signing"), "the original CA cannot check CRLs: {text}");
    let (ok, text) = verify(&[
        "-crl_check",
        "-CAfile",
        served_cp.to_str().unwrap(),
        "-CRLfile",
        crl.to_str().unwrap(),
        good_cert.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let (ok, text) = verify(&[
        "-crl_check",
        "-CAfile",
        served_cp.to_str().unwrap(),
        "-CRLfile",
        crl.to_str().unwrap(),
        revoked_cert.to_str().unwrap(),
    ]);
    assert!(!ok && text.contains("revoked"), "{text}");

    // HAProxy with the served bundle and the CRL: the good client in, the revoked one out.
    let haproxy = Haproxy::start(path, &served_cp, Some(&crl));
    let good = haproxy.curl(path, "scheduler");
    assert!(good.0 && good.1 == "ok", "the good client: {:?}\n{}", good, haproxy.log());
    let bad = haproxy.curl(path, "controller-manager");
    assert!(!bad.0, "the revoked client was let in: {bad:?}");
    assert!(haproxy.log().contains("revoked") || !bad.0);
    drop(haproxy);

    // The imported keys appear in no answer and in no database dump.
    server.transcript.assert_no_private_key_except("/certificates");
    let dump = database_dump(&server, backend);
    // The search can find what the database holds: the served CA certificate is there.
    let served_hex = hex::encode_upper(pem::parse(&bundles["control-plane"]).unwrap().contents());
    assert!(dump.contains(&served_hex[200..264]), "the dump shows binary columns as hex");
    // kubeadm's sa.key came along: the cluster's one service-account key, RSA.
    let sa =
        server.json(Method::GET, "/v1/clusters/adopted/service-account/keys", Some(&admin), None, 200).await;
    assert_eq!((sa.as_array().unwrap().len(), sa[0]["algorithm"].as_str()), (1, Some("rsa")), "{sa}");
    let (_, _, keys_pem) =
        server.send(Method::GET, "/v1/clusters/adopted/service-account/keys.pem", None, None).await;
    assert_eq!(keys_pem, std::fs::read_to_string(pki.join("sa.pub")).unwrap());
    for base in ["ca", "front-proxy-ca", "etcd/ca", "sa"] {
        let key = pki.join(format!("{base}.key"));
        let pem_text = std::fs::read_to_string(&key).unwrap();
        let body_line = pem_text.lines().nth(1).unwrap();
        assert_eq!(server.transcript.find(body_line), None, "{base}.key in an answer");
        let raw = der_hex(&key);
        assert!(!dump.contains(&raw[..64]), "{base}.key in the database dump");
        // And its PKCS#8 form, the one kca seals.
        let pkcs8 = openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", key.to_str().unwrap()]);
        let pkcs8 = hex::encode_upper(pem::parse(pkcs8).unwrap().contents());
        assert!(!dump.contains(&pkcs8[..64]), "{base}.key (PKCS#8) in the database dump");
    }
    assert!(dump.contains("AUTHORITY.IMPORT") || dump.contains("CLUSTER.CREATE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_imports_are_422_and_change_nothing() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let config = openssl_config(path);
    let pki = kubeadm_pki(path, &config);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();

    // Not a CA.
    let leaf_key = path.join("leaf.key");
    kubeadm_key(&leaf_key, false);
    let leaf = path.join("leaf.crt");
    self_signed(&config, &leaf_key, "leaf", "not_ca", &leaf);
    // Expired: valid 2020-2021.
    let old_key = path.join("old.key");
    kubeadm_key(&old_key, true);
    let old_csr = path.join("old.csr");
    openssl(&[
        "req",
        "-new",
        "-config",
        config.to_str().unwrap(),
        "-key",
        old_key.to_str().unwrap(),
        "-subj",
        "/CN=old",
        "-out",
        old_csr.to_str().unwrap(),
    ]);
    let old = path.join("old.crt");
    openssl(&[
        "ca",
        "-batch",
        "-config",
        config.to_str().unwrap(),
        "-selfsign",
        "-keyfile",
        old_key.to_str().unwrap(),
        "-in",
        old_csr.to_str().unwrap(),
        "-startdate",
        "20200101000000Z",
        "-enddate",
        "20210101000000Z",
        "-extensions",
        "kubeadm_ca",
        "-notext",
        "-out",
        old.to_str().unwrap(),
    ]);
    // An algorithm kca does not sign with: P-521.
    let p521_key = path.join("p521.key");
    openssl(&["ecparam", "-name", "secp521r1", "-genkey", "-noout", "-out", p521_key.to_str().unwrap()]);
    let p521 = path.join("p521.crt");
    self_signed(&config, &p521_key, "p521", "kubeadm_ca", &p521);

    let mut narrow = Vec::new();
    for scope in [Scope::ClustersWrite, Scope::CertificatesIssue, Scope::Read] {
        narrow.push(server.token(&[scope]).await);
    }
    let authorities = server.json(Method::GET, "/v1/clusters/prod/authorities", None, None, 200).await;
    let audit = server.app.store.list_audit(None, None, 1000).await.unwrap().len();
    for (what, cert, key, field, words) in [
        (
            "mismatched key",
            pki.join("ca.crt"),
            pki.join("front-proxy-ca.key"),
            "private_key_pem",
            "does not belong",
        ),
        ("not a CA", leaf, leaf_key, "certificate_pem", "not a CA"),
        ("expired", old, old_key, "certificate_pem", "expired"),
        ("P-521", p521, p521_key.clone(), "certificate_pem", "unsupported"),
    ] {
        let body = json!({"certificate_pem": read(&cert), "private_key_pem": read(&key)});
        let problem = server
            .json(
                Method::POST,
                "/v1/clusters/prod/authorities/control-plane/import",
                Some(&admin),
                Some(body),
                422,
            )
            .await;
        assert_eq!(problem["field"], field, "{what}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains(words), "{what}: {problem}");
        assert!(!problem.to_string().contains("PRIVATE KEY"), "{what}");
    }
    // A key where a structure is expected is not quoted back.
    let misplaced = json!({"name": "other", "server": "https://k8s.example:6443",
                           "authorities": {"control-plane": read(&pki.join("ca.key"))}});
    let (status, _, problem) = server.send(Method::POST, "/v1/clusters", Some(&admin), Some(misplaced)).await;
    assert!(status.is_client_error() && !problem.contains("PRIVATE KEY"), "{status} {problem}");

    // A bad service-account key refuses the whole cluster.
    let bad_sa = json!({"name": "with-sa", "server": "https://k8s.example:6443",
                        "service_account_key_pem": read(&p521_key)});
    let problem = server.json(Method::POST, "/v1/clusters", Some(&admin), Some(bad_sa), 422).await;
    assert_eq!(problem["field"], "service_account_key_pem", "{problem}");
    server.json(Method::GET, "/v1/clusters/with-sa", Some(&admin), None, 404).await;

    // Not for a narrower token, valid import or not.
    let good =
        json!({"certificate_pem": read(&pki.join("ca.crt")), "private_key_pem": read(&pki.join("ca.key"))});
    for token in &narrow {
        server
            .json(
                Method::POST,
                "/v1/clusters/prod/authorities/control-plane/import",
                Some(token),
                Some(good.clone()),
                403,
            )
            .await;
    }
    assert_eq!(server.json(Method::GET, "/v1/clusters/prod/authorities", None, None, 200).await, authorities);
    assert_eq!(server.app.store.list_audit(None, None, 1000).await.unwrap().len(), audit);

    // A good one becomes generation 2 and signs; generation 1 stays in the bundle, retiring.
    let answer = server
        .json(
            Method::POST,
            "/v1/clusters/prod/authorities/control-plane/import",
            Some(&admin),
            Some(good),
            200,
        )
        .await;
    assert_eq!(answer["generation"], 2);
    assert_eq!(answer["generations"].as_array().unwrap().len(), 2);
    assert_eq!(answer["subject"], "CN=kubernetes");
    server.transcript.assert_no_private_key();
}

/// A HAProxy frontend terminating mutual TLS with a CA file (and a CRL file), answering 200 "ok".
pub struct Haproxy {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Haproxy {
    pub fn start(dir: &Path, ca_file: &Path, crl_file: Option<&Path>) -> Self {
        let server_key = dir.join("haproxy.key");
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            server_key.to_str().unwrap(),
        ]);
        let server_cert = dir.join("haproxy.crt");
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            server_key.to_str().unwrap(),
            "-subj",
            "/CN=localhost",
            "-days",
            "1",
            "-out",
            server_cert.to_str().unwrap(),
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ]);
        let pem = format!(
            "{}{}",
            std::fs::read_to_string(&server_cert).unwrap(),
            std::fs::read_to_string(&server_key).unwrap()
        );
        let bundle = temp_file(dir, "haproxy.pem", pem.as_bytes());
        let port = free_port();
        let config = format!(
            "global\n    tune.ssl.cachesize 0\ndefaults\n    mode http\n    timeout connect 5s\n    timeout client 10s\n    timeout server 10s\n\
             frontend apiserver\n    bind 127.0.0.1:{port} ssl crt {} verify required ca-file {}{} no-tls-tickets\n\
             \x20   http-request return status 200 content-type text/plain string ok\n",
            bundle.display(),
            ca_file.display(),
            crl_file.map(|crl| format!(" crl-file {}", crl.display())).unwrap_or_default()
        );
        let config = temp_file(dir, "haproxy.cfg", config.as_bytes());
        let log = dir.join("haproxy.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("/usr/sbin/haproxy")
            .args(["-f", config.to_str().unwrap(), "-db"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("haproxy runs");
        let mut haproxy = Self { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = haproxy.child.try_wait().unwrap() {
                panic!("haproxy exited with {status}: {}", haproxy.log());
            }
            assert!(Instant::now() < deadline, "haproxy did not start: {}", haproxy.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        haproxy
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// curl with the client certificate `name` (`dir/name.crt` + `.key`): (succeeded, body).
    pub fn curl(&self, dir: &Path, name: &str) -> (bool, String) {
        let output = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
            .arg(dir.join("haproxy.crt"))
            .arg("--cert")
            .arg(dir.join(format!("{name}.crt")))
            .arg("--key")
            .arg(dir.join(format!("{name}.key")))
            .arg(format!("https://127.0.0.1:{}/api", self.port))
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&output.stdout).to_string();
        (
            output.status.success(),
            if output.status.success() { body } else { String::from_utf8_lossy(&output.stderr).to_string() },
        )
    }
}
