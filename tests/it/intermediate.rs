//! An authority as an intermediate under the organisation's root: CSR out, signed with openssl by
//! a test root, uploaded; what kca issues then verifies up to the root (`openssl verify -CAfile
//! root -untrusted chain`) and HAProxy trusting only the root lets its kubeconfigs in.

use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;
use crate::pki_import::{Haproxy, openssl, verify};
use kca::token::Scope;

/// An openssl configuration for an organisation's root and what it signs.
fn config(dir: &Path) -> PathBuf {
    temp_file(
        dir,
        "org.cnf",
        b"[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = placeholder\n\
          [root]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n\
          subjectKeyIdentifier = hash\n\
          [intermediate]\nbasicConstraints = critical, CA:TRUE, pathlen:0\n\
          keyUsage = critical, keyCertSign, cRLSign, digitalSignature\n\
          subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n\
          [no_crl_sign]\nbasicConstraints = critical, CA:TRUE, pathlen:0\nkeyUsage = critical, keyCertSign\n\
          subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
    )
}

/// A root: P-384 key, self-signed, ten years.
fn root(dir: &Path, config: &Path, name: &str) -> (PathBuf, PathBuf) {
    let file = name.replace(' ', "-");
    let key = dir.join(format!("{file}.key"));
    openssl(&["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", key.to_str().unwrap()]);
    let cert = dir.join(format!("{file}.crt"));
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-config",
        config.to_str().unwrap(),
        "-key",
        key.to_str().unwrap(),
        "-subj",
        &format!("/O=Example Org/CN={name}"),
        "-days",
        "3650",
        "-sha384",
        "-extensions",
        "root",
        "-out",
        cert.to_str().unwrap(),
    ]);
    (cert, key)
}

/// Sign a CSR with a root, with the extensions of `section`.
fn sign(config: &Path, csr: &Path, root: &(PathBuf, PathBuf), section: &str, out: &Path) {
    openssl(&[
        "x509",
        "-req",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        root.0.to_str().unwrap(),
        "-CAkey",
        root.1.to_str().unwrap(),
        "-CAcreateserial",
        "-days",
        "365",
        "-sha384",
        "-extfile",
        config.to_str().unwrap(),
        "-extensions",
        section,
        "-out",
        out.to_str().unwrap(),
    ]);
}

async fn csr(server: &TestServer, admin: &str, dir: &Path, name: &str) -> PathBuf {
    let answer = server
        .json(
            Method::POST,
            "/v1/clusters/prod/authorities/operators/intermediate/csr",
            Some(admin),
            None,
            201,
        )
        .await;
    assert_eq!(answer["kind"], "operators");
    let path = temp_file(dir, &format!("{name}.csr"), answer["csr_pem"].as_str().unwrap().as_bytes());
    let checked = std::process::Command::new("openssl")
        .args(["req", "-verify", "-noout", "-in", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    path
}

fn install_body(cert: &Path, chain: &Path) -> Value {
    json!({
        "certificate_pem": std::fs::read_to_string(cert).unwrap(),
        "chain_pem": std::fs::read_to_string(chain).unwrap(),
    })
}

const INSTALL: &str = "/v1/clusters/prod/authorities/operators/intermediate/certificate";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intermediate_under_the_org_root_signs_what_the_root_vouches_for() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_component_cluster(&admin, "prod").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let config = config(path);
    let org = root(path, &config, "Example Root CA");
    let other_org = root(path, &config, "Other Root CA");

    // A kubeconfig from kca's own operators CA, before: the org root does not vouch for it.
    let before = server
        .json(
            Method::POST,
            "/v1/clusters/prod/kubeconfigs",
            Some(&admin),
            Some(json!({"user": "early"})),
            201,
        )
        .await;
    temp_file(path, "early.crt", before["certificate_pem"].as_str().unwrap().as_bytes());
    temp_file(path, "early.key", before["private_key_pem"].as_str().unwrap().as_bytes());

    // Only an admin of the cluster asks for the CSR or installs the certificate.
    for scope in [Scope::ClustersWrite, Scope::KubeconfigsIssue, Scope::Read] {
        let token = server.token(&[scope]).await;
        let csr_path = "/v1/clusters/prod/authorities/operators/intermediate/csr";
        server.json(Method::POST, csr_path, Some(&token), None, 403).await;
    }
    // Installing with no request is a 404.
    let stray = server
        .json(
            Method::POST,
            INSTALL,
            Some(&admin),
            Some(json!({"certificate_pem": "x", "chain_pem": "y"})),
            404,
        )
        .await;
    assert!(stray["detail"].as_str().unwrap().contains("intermediate/csr"), "{stray}");

    // A certificate for another request's key, one whose chain is another root, one without
    // cRLSign: each a 422 that changes nothing.
    let first = csr(&server, &admin, path, "first").await;
    let for_first = path.join("for-first.crt");
    sign(&config, &first, &org, "intermediate", &for_first);
    let csr_path = csr(&server, &admin, path, "current").await;
    let intermediate = path.join("intermediate.crt");
    sign(&config, &csr_path, &org, "intermediate", &intermediate);
    let no_crl_sign = path.join("no-crl-sign.crt");
    sign(&config, &csr_path, &org, "no_crl_sign", &no_crl_sign);
    let authorities =
        server.json(Method::GET, "/v1/clusters/prod/authorities/operators", None, None, 200).await;
    for (what, body, field, words) in [
        ("another key", install_body(&for_first, &org.0), "certificate_pem", "not for the key"),
        ("another root", install_body(&intermediate, &other_org.0), "chain_pem", "issuer"),
        ("no cRLSign", install_body(&no_crl_sign, &org.0), "certificate_pem", "cRLSign"),
    ] {
        let problem = server.json(Method::POST, INSTALL, Some(&admin), Some(body), 422).await;
        assert_eq!(problem["field"], field, "{what}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains(words), "{what}: {problem}");
    }
    assert_eq!(
        server.json(Method::GET, "/v1/clusters/prod/authorities/operators", None, None, 200).await,
        authorities
    );

    // The good one becomes generation 2 and signs; the bundle carries the chain.
    let installed = server
        .json(Method::POST, INSTALL, Some(&admin), Some(install_body(&intermediate, &org.0)), 200)
        .await;
    assert_eq!(installed["generation"], 2);
    assert!(installed["subject"].as_str().unwrap().starts_with("CN=operators CA 2"), "{installed}");
    let (_, _, bundle) =
        server.send(Method::GET, "/v1/clusters/prod/authorities/operators/ca.pem", None, None).await;
    let root_pem = std::fs::read_to_string(&org.0).unwrap();
    let intermediate_pem = std::fs::read_to_string(&intermediate).unwrap();
    assert!(bundle.contains(root_pem.trim()) && bundle.contains(intermediate_pem.trim()), "{bundle}");
    // The same request cannot be installed twice.
    server.json(Method::POST, INSTALL, Some(&admin), Some(install_body(&intermediate, &org.0)), 404).await;

    // A kubeconfig issued now verifies up to the root through the chain.
    let issued = server
        .json(
            Method::POST,
            "/v1/clusters/prod/kubeconfigs",
            Some(&admin),
            Some(json!({"user": "alice", "groups": ["dev"]})),
            201,
        )
        .await;
    let certificate_pem = issued["certificate_pem"].as_str().unwrap();
    let blocks = pem::parse_many(certificate_pem).unwrap();
    assert_eq!(blocks.len(), 2, "the leaf, then the intermediate");
    let leaf = temp_file(path, "alice-leaf.crt", pem::encode(&blocks[0]).as_bytes());
    let chain = temp_file(path, "chain.pem", pem::encode(&blocks[1]).as_bytes());
    let (ok, text) = verify(&[
        "-CAfile",
        org.0.to_str().unwrap(),
        "-untrusted",
        chain.to_str().unwrap(),
        leaf.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let (ok, _) = verify(&[
        "-CAfile",
        other_org.0.to_str().unwrap(),
        "-untrusted",
        chain.to_str().unwrap(),
        leaf.to_str().unwrap(),
    ]);
    assert!(!ok, "another root does not vouch for it");
    // The kubeconfig itself carries the same chain.
    let kubeconfig: serde_norway::Value =
        serde_norway::from_str(issued["kubeconfig"].as_str().unwrap()).unwrap();
    use base64::Engine;
    let data = kubeconfig["users"][0]["user"]["client-certificate-data"].as_str().unwrap();
    let data = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data).unwrap()).unwrap();
    assert_eq!(data, certificate_pem);

    // HAProxy trusting only the organisation's root lets it in (the client sends the chain), and
    // refuses the kubeconfig of kca's own first operators CA.
    temp_file(path, "alice.crt", certificate_pem.as_bytes());
    temp_file(path, "alice.key", issued["private_key_pem"].as_str().unwrap().as_bytes());
    let haproxy = Haproxy::start(path, &org.0, None);
    let alice = haproxy.curl(path, "alice");
    assert!(alice.0 && alice.1 == "ok", "{alice:?}\n{}", haproxy.log());
    let early = haproxy.curl(path, "early");
    assert!(!early.0, "a certificate the root did not vouch for was let in: {early:?}");
    server.transcript.assert_no_private_key_except("/kubeconfigs");
}
