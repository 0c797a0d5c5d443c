//! `kca pki export`: kubeadm's layout, every certificate verifying against the CA file beside it,
//! keys matching, and no CA key anywhere.

use std::process::Command;

use reqwest::Method;
use serde_json::json;

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
    assert!(String::from_utf8_lossy(&output.stderr).contains("skipped super-admin.conf"));

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
        if name.ends_with(".key") && name != "sa.key" {
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
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        12,
        "7 certificates and 4 kubeconfigs (super-admin.conf skipped: the policy does not allow system:masters), then the apiserver again"
    );
    assert!(!dir.join("super-admin.conf").exists());

    // What expires within 400 days: every live certificate, newest first in the API; a
    // kubeadm-like table from the CLI; nothing within a day.
    let soon = server
        .json(
            Method::GET,
            "/v1/clusters/prod/certificates?expiring_within=400d&limit=500",
            Some(&admin),
            None,
            200,
        )
        .await;
    assert_eq!(soon["items"].as_array().unwrap().len(), 12);
    let none = server
        .json(Method::GET, "/v1/clusters/prod/certificates?expiring_within=1d", Some(&admin), None, 200)
        .await;
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
    let bad = server
        .json(Method::GET, "/v1/clusters/prod/certificates?expiring_within=soon", Some(&admin), None, 422)
        .await;
    assert_eq!(bad["field"], "expiring_within");
    let kca = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kca"))
            .args(args)
            .env("KCA_URL", &server.url)
            .env("KCA_TOKEN", &admin)
            .env("KCA_CACERT", server.data_dir.path().join("tls/dev-cert.pem"))
            .env("HOME", out.path())
            .env_remove("XDG_CONFIG_HOME")
            .output()
            .unwrap()
    };
    let table = kca(&["certificates", "expiring", "prod", "--within", "400d"]);
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    let table = String::from_utf8(table.stdout).unwrap();
    for expected in [
        "CERTIFICATE",
        "EXPIRES",
        "RESIDUAL TIME",
        "CERTIFICATE AUTHORITY",
        "EXTERNALLY MANAGED",
        "apiserver (kube-apiserver)",
        "etcd-peer (cp-1)",
        "364d",
        "control-plane",
    ] {
        assert!(table.contains(expected), "{expected} missing from:\n{table}");
    }
    let quiet =
        String::from_utf8(kca(&["certificates", "expiring", "prod", "--within", "1d"]).stdout).unwrap();
    assert!(!quiet.contains("apiserver"), "{quiet}");
    let wide =
        String::from_utf8(kca(&["certificates", "expiring", "prod", "--within", "3700d"]).stdout).unwrap();
    assert!(wide.contains("operators CA 1"), "the CAs expire within ten years:\n{wide}");

    // The earliest expiry per cluster and profile, for Prometheus.
    let (_, _, metrics) = server.send(Method::GET, "/metrics", None, None).await;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "kca_certificate_earliest_expiry_timestamp_seconds{cluster=\"prod\",profile=\"apiserver\"}",
            )
        })
        .unwrap_or_else(|| panic!("no apiserver expiry gauge:\n{metrics}"));
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let in_a_year = time::OffsetDateTime::now_utc().unix_timestamp() as f64 + 365.0 * 86_400.0;
    assert!((value - in_a_year).abs() < 3_600.0, "{line}");

    // Renewal keeps names, SANs and keys, and replaces each file by a rename.
    use std::os::unix::fs::MetadataExt;
    let describe = |path: &std::path::Path| {
        run_ok(
            "openssl",
            &[
                "x509",
                "-in",
                path.to_str().unwrap(),
                "-noout",
                "-subject",
                "-ext",
                "subjectAltName,extendedKeyUsage",
            ],
        )
    };
    let serial = |path: &std::path::Path| {
        run_ok("openssl", &["x509", "-in", path.to_str().unwrap(), "-noout", "-serial"])
    };
    let watched = ["apiserver", "etcd/server", "etcd/peer", "front-proxy-client"];
    let before: Vec<(String, String, u64)> = watched
        .iter()
        .map(|name| {
            let cert = pki.join(format!("{name}.crt"));
            (describe(&cert), serial(&cert), std::fs::metadata(&cert).unwrap().ino())
        })
        .collect();
    let conf_before = std::fs::read_to_string(dir.join("admin.conf")).unwrap();
    let files_before = walk(&dir).len();
    let renewed = kca(&["pki", "renew", "prod", "--dir", dir.to_str().unwrap()]);
    assert!(renewed.status.success(), "{}", String::from_utf8_lossy(&renewed.stderr));
    for (name, (description, old_serial, inode)) in watched.iter().zip(before) {
        let cert = pki.join(format!("{name}.crt"));
        assert_eq!(describe(&cert), description, "{name}: same subject, SANs and usages");
        assert_ne!(serial(&cert), old_serial, "{name}: a new certificate");
        assert_ne!(std::fs::metadata(&cert).unwrap().ino(), inode, "{name}: replaced by a rename");
        let cert_key = run_ok("openssl", &["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"]);
        let key = pki.join(format!("{name}.key"));
        assert_eq!(
            cert_key,
            run_ok("openssl", &["pkey", "-in", key.to_str().unwrap(), "-pubout"]),
            "{name}: same key"
        );
        let ca = if name.starts_with("etcd") {
            "etcd/ca.crt"
        } else if *name == "front-proxy-client" {
            "front-proxy-ca.crt"
        } else {
            "ca.crt"
        };
        let verified =
            run_ok("openssl", &["verify", "-CAfile", pki.join(ca).to_str().unwrap(), cert.to_str().unwrap()]);
        assert!(verified.contains(": OK"), "{verified}");
    }
    let conf_after = std::fs::read_to_string(dir.join("admin.conf")).unwrap();
    assert_ne!(conf_after, conf_before);
    let view = run_ok(
        "kubectl",
        &["config", "view", "--kubeconfig", dir.join("admin.conf").to_str().unwrap(), "-o", "json"],
    );
    assert!(view.contains("kubernetes-admin"), "{view}");
    assert_eq!(walk(&dir).len(), files_before, "no temporary file left behind");
    // One by name; an unknown name is refused.
    assert!(
        kca(&["pki", "renew", "prod", "scheduler.conf", "--dir", dir.to_str().unwrap()]).status.success()
    );
    assert!(!kca(&["pki", "renew", "prod", "nope", "--dir", dir.to_str().unwrap()]).status.success());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

/// The host's name and its address on the default route: what `kca pki export` defaults to.
fn host_names() -> (String, String) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_ascii_lowercase();
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket.connect("192.0.2.1:9").unwrap();
    (host, socket.local_addr().unwrap().ip().to_string())
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pki_export_without_flags_writes_kubeadms_files_and_kubeconfigs() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    let (host, advertise) = host_names();
    let mut policy = component_policy();
    policy["control_plane_names"].as_array_mut().unwrap().extend([json!(host), json!(advertise)]);
    policy["node_names"].as_array_mut().unwrap().push(json!(host));
    policy["allow_system_masters"] = json!(true);
    server
        .json(
            Method::POST,
            "/v1/clusters",
            Some(&admin),
            Some(json!({"name": "prod", "server": "https://k8s.example:6443", "policy": policy})),
            201,
        )
        .await;
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("kubernetes");
    let output = Command::new(env!("CARGO_BIN_EXE_kca"))
        .args(["pki", "export", "prod", "--dir", dir.to_str().unwrap()])
        .env("KCA_URL", &server.url)
        .env("KCA_TOKEN", &admin)
        .env("KCA_CACERT", server.data_dir.path().join("tls/dev-cert.pem"))
        .env("HOME", out.path())
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    // Exactly kubeadm's files, with its modes.
    let mut files: Vec<(String, u32)> = walk(&dir)
        .into_iter()
        .map(|p| (p.strip_prefix(&dir).unwrap().display().to_string(), mode(&p)))
        .collect();
    files.sort();
    let mut expected: Vec<(String, u32)> =
        ["admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet.conf"]
            .iter()
            .map(|f| (f.to_string(), 0o600))
            .collect();
    for ca in ["pki/ca.crt", "pki/front-proxy-ca.crt", "pki/etcd/ca.crt", "pki/sa.pub"] {
        expected.push((ca.to_string(), 0o644));
    }
    expected.push(("pki/sa.key".to_string(), 0o600));
    for base in [
        "pki/apiserver",
        "pki/apiserver-kubelet-client",
        "pki/front-proxy-client",
        "pki/apiserver-etcd-client",
        "pki/etcd/server",
        "pki/etcd/peer",
        "pki/etcd/healthcheck-client",
    ] {
        expected.push((format!("{base}.crt"), 0o644));
        expected.push((format!("{base}.key"), 0o600));
    }
    expected.sort();
    assert_eq!(files, expected);

    // Serving names default to kubeadm's: the host's name and address, loopback for etcd.
    let san = |name: &str| {
        run_ok(
            "openssl",
            &[
                "x509",
                "-in",
                dir.join(name).to_str().unwrap(),
                "-noout",
                "-subject",
                "-ext",
                "subjectAltName",
            ],
        )
    };
    let apiserver = san("pki/apiserver.crt");
    assert!(
        apiserver.contains(&format!("DNS:{host}")) && apiserver.contains(&format!("IP Address:{advertise}")),
        "{apiserver}"
    );
    let etcd = san("pki/etcd/server.crt");
    for name in [
        format!("DNS:{host}"),
        "DNS:localhost".into(),
        "IP Address:127.0.0.1".into(),
        "IP Address:0:0:0:0:0:0:0:1".into(),
        format!("IP Address:{advertise}"),
    ] {
        assert!(etcd.contains(&name), "etcd-server lacks {name}: {etcd}");
    }
    assert!(etcd.contains(&format!("CN = {host}")) || etcd.contains(&format!("CN={host}")), "{etcd}");

    // kubectl reads every kubeconfig: kubeadm's users, groups and servers.
    let control_plane = std::fs::read_to_string(dir.join("pki/ca.crt")).unwrap();
    for (file, user, groups, server_url) in [
        ("admin.conf", "kubernetes-admin", "kubeadm:cluster-admins", "https://k8s.example:6443".to_string()),
        (
            "super-admin.conf",
            "kubernetes-super-admin",
            "system:masters",
            "https://k8s.example:6443".to_string(),
        ),
        (
            "controller-manager.conf",
            "system:kube-controller-manager",
            "",
            format!("https://{advertise}:6443"),
        ),
        ("scheduler.conf", "system:kube-scheduler", "", format!("https://{advertise}:6443")),
        (
            "kubelet.conf",
            &*format!("system:node:{host}"),
            "system:nodes",
            "https://k8s.example:6443".to_string(),
        ),
    ] {
        let path = dir.join(file);
        let view = run_ok(
            "kubectl",
            &["config", "view", "--kubeconfig", path.to_str().unwrap(), "--raw", "-o", "json"],
        );
        let view: serde_json::Value = serde_json::from_str(&view).unwrap();
        assert_eq!(view["users"][0]["name"], user, "{file}");
        assert_eq!(view["clusters"][0]["cluster"]["server"], server_url.as_str(), "{file}");
        use base64::Engine;
        let decode = |v: &serde_json::Value| {
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap())
                .unwrap()
        };
        assert_eq!(
            decode(&view["clusters"][0]["cluster"]["certificate-authority-data"]),
            control_plane,
            "{file}"
        );
        let cert = temp_file(
            out.path(),
            "client.crt",
            decode(&view["users"][0]["user"]["client-certificate-data"]).as_bytes(),
        );
        let key = temp_file(
            out.path(),
            "client.key",
            decode(&view["users"][0]["user"]["client-key-data"]).as_bytes(),
        );
        let subject = run_ok(
            "openssl",
            &["x509", "-in", cert.to_str().unwrap(), "-noout", "-subject", "-nameopt", "RFC2253"],
        );
        assert!(subject.contains(&format!("CN={user}")), "{file}: {subject}");
        if !groups.is_empty() {
            assert!(subject.contains(&format!("O={groups}")), "{file}: {subject}");
        }
        let cert_key = run_ok("openssl", &["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"]);
        assert_eq!(cert_key, run_ok("openssl", &["pkey", "-in", key.to_str().unwrap(), "-pubout"]), "{file}");
    }
    server.transcript.assert_no_private_key_except("/certificates");
}
