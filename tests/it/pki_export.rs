//! `kca pki export`: kubeadm's layout, every certificate verifying against the CA file beside it,
//! keys matching, and no CA key anywhere.

use std::process::Command;

use reqwest::Method;

use crate::common::*;
use kca::token::Scope;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pki_export_writes_kubeadms_layout_without_ca_keys() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_component_cluster(&admin, "prod").await;
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("kubernetes");
    let export = |extra: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kca"));
        command
            .args([
                "pki",
                "export",
                "prod",
                "--dir",
                dir.to_str().unwrap(),
                "--node-name",
                "cp-1",
                "--ip",
                "10.0.0.10",
            ])
            .args(extra)
            .env("KCA_URL", &server.url)
            .env("KCA_TOKEN", &admin)
            .env("KCA_CACERT", server.data_dir.path().join("tls/dev-cert.pem"))
            .env("HOME", out.path())
            .env_remove("XDG_CONFIG_HOME");
        command
    };
    let output = tokio::task::spawn_blocking({
        let mut command = export(&[]);
        move || command.output().unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let pki = dir.join("pki");
    let expected = [
        ("apiserver", "ca.crt"),
        ("apiserver-kubelet-client", "ca.crt"),
        ("front-proxy-client", "front-proxy-ca.crt"),
        ("apiserver-etcd-client", "etcd/ca.crt"),
        ("etcd/server", "etcd/ca.crt"),
        ("etcd/peer", "etcd/ca.crt"),
        ("etcd/healthcheck-client", "etcd/ca.crt"),
    ];
    for (name, ca) in expected {
        let cert = pki.join(format!("{name}.crt"));
        let key = pki.join(format!("{name}.key"));
        let ca = pki.join(ca);
        let verified =
            run_ok("openssl", &["verify", "-CAfile", ca.to_str().unwrap(), cert.to_str().unwrap()]);
        assert!(verified.contains(": OK"), "{name}: {verified}");
        let cert_key = run_ok("openssl", &["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"]);
        let key_pub = run_ok("openssl", &["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
        assert_eq!(cert_key, key_pub, "{name}: the key matches");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600,
            "{name}.key is private"
        );
    }
    // The CA files are the cluster's bundles; no CA key was written anywhere.
    let (_, _, control_plane) =
        server.send(Method::GET, "/v1/clusters/prod/authorities/control-plane/ca.pem", None, None).await;
    assert_eq!(std::fs::read_to_string(pki.join("ca.crt")).unwrap(), control_plane);
    for entry in walk(&dir) {
        let name = entry.file_name().unwrap().to_str().unwrap().to_string();
        assert!(!name.starts_with("ca.key") && !name.ends_with("ca.key"), "a CA key: {}", entry.display());
        if name.ends_with(".key") {
            let certificate = entry.with_extension("crt");
            assert!(certificate.exists(), "{} belongs to a component certificate", entry.display());
        }
    }
    // The apiserver certificate names what kubeadm's table asks for; etcd certificates the node.
    let text =
        run_ok("openssl", &["x509", "-in", pki.join("apiserver.crt").to_str().unwrap(), "-noout", "-text"]);
    for name in [
        "DNS:kubernetes.default.svc.cluster.local",
        "DNS:cp-1",
        "IP Address:10.96.0.1",
        "IP Address:10.0.0.10",
    ] {
        assert!(text.contains(name), "apiserver lacks {name}");
    }
    let peer = run_ok(
        "openssl",
        &["x509", "-in", pki.join("etcd/peer.crt").to_str().unwrap(), "-noout", "-subject"],
    );
    assert!(peer.contains("CN = cp-1") || peer.contains("CN=cp-1"), "{peer}");

    // Existing files are kept unless --force.
    let again = export(&[]).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let forced = export(&["--force", "--cert", "apiserver"]).output().unwrap();
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    let listed =
        server.json(Method::GET, "/v1/clusters/prod/certificates?limit=500", Some(&admin), None, 200).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 8, "7 certificates, then the apiserver again");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}
