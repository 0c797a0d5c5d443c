//! `kca backup` of a server under issuance load, `kca restore` into a fresh SQLite and a fresh
//! Postgres: everything recorded before the backup is there, CRL Numbers continue above what the
//! old server published after the backup, and the restored server issues under the same CAs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::common::*;
use crate::on_both_backends;
use crate::revocation::{crl_der, crl_facts, issue_user};
use kca::token::Scope;

on_both_backends!(a_backup_under_load_restores_into_either_backend);

fn kca(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kca")).args(args).output().unwrap()
}

fn openssl_ok(args: &[&str]) -> String {
    let output = std::process::Command::new("openssl").args(args).output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "openssl {args:?}: {text}");
    text
}

async fn a_backup_under_load_restores_into_either_backend(backend: Backend) {
    let server = Arc::new(TestServer::start(backend).await);
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    let cluster_id = server.app.store.find_cluster("prod").await.unwrap().id;
    let mut revoked = Vec::new();
    for i in 0..4 {
        let issued = issue_user(&server, &admin, "prod", &format!("early-{i}"), &[]).await;
        if i % 2 == 0 {
            let serial = issued["serial"].as_str().unwrap().to_string();
            let path = format!("/v1/clusters/prod/certificates/{serial}/revoke");
            server
                .json(Method::POST, &path, Some(&admin), Some(json!({"reason": "keyCompromise"})), 200)
                .await;
            revoked.push(serial);
        }
    }
    let (_, _, ca_pem) =
        server.send(Method::GET, "/v1/clusters/prod/authorities/operators/ca.pem", None, None).await;
    let scratch = tempfile::tempdir().unwrap();
    let ca_file = temp_file(scratch.path(), "ca.pem", ca_pem.as_bytes());

    // Two clients issue without pause; the backup is taken in the middle.
    let issued = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|c| {
            let (server, admin, issued, done) = (server.clone(), admin.clone(), issued.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !done.load(Ordering::SeqCst) {
                    i += 1;
                    let cert = issue_user(&server, &admin, "prod", &format!("load-{c}-{i}"), &["dev"]).await;
                    issued.lock().unwrap().push(cert["serial"].as_str().unwrap().to_string());
                }
            })
        })
        .collect();
    let wait_for = |count: usize| {
        let issued = issued.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while issued.lock().unwrap().len() < count {
                assert!(Instant::now() < deadline, "the load stalled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(20).await;
    let answered_before = issued.lock().unwrap().clone();
    let audit_before = server.app.store.list_audit(None, None, 100_000).await.unwrap();
    let tokens_before = server.app.store.list_tokens(None, 1000).await.unwrap();
    let archive = scratch.path().join("kca.backup");
    let (url, out) = (server.database_url(), archive.display().to_string());
    let data_dir = scratch.path().join("backup-host").display().to_string();
    let output = tokio::task::spawn_blocking(move || {
        kca(&["backup", "--out", &out, "--database-url", &url, "--data-dir", &data_dir])
    })
    .await
    .unwrap();
    assert!(output.status.success(), "kca backup: {}", String::from_utf8_lossy(&output.stderr));
    wait_for(answered_before.len() + 20).await;
    done.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777, 0o600);
    let bytes = std::fs::read(&archive).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("PRIVATE KEY"));

    // After the backup the old server revokes more, publishing higher CRL Numbers.
    let last: Vec<String> = issued.lock().unwrap().iter().rev().take(3).cloned().collect();
    for serial in &last {
        let path = format!("/v1/clusters/prod/certificates/{serial}/revoke");
        server.json(Method::POST, &path, Some(&admin), None, 200).await;
    }
    let (old_last_number, _) = crl_facts(&crl_der(&server, "prod", "operators").await);
    let master_key = server.data_dir.path().join("master.key");

    // A damaged archive is refused before anything is written.
    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x20;
    let damaged_file = temp_file(scratch.path(), "damaged.backup", &damaged);

    for target in [Backend::Sqlite, Backend::Postgres] {
        let data_dir = tempfile::tempdir().unwrap();
        let database = (target == Backend::Postgres).then(PgDatabase::create);
        let url = match &database {
            Some(db) => db.url.clone(),
            None => format!("sqlite://{}", data_dir.path().join("kca.db").display()),
        };
        let dir = data_dir.path().display().to_string();
        let key = master_key.display().to_string();
        let common = ["--data-dir", &dir, "--database-url", &url, "--master-key-file", &key];
        let refused = kca(&[&["restore", "--from", damaged_file.to_str().unwrap()], &common[..]].concat());
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains("damaged"), "{refused:?}");
        let restored = kca(&[&["restore", "--from", archive.to_str().unwrap()], &common[..]].concat());
        assert!(restored.status.success(), "kca restore: {}", String::from_utf8_lossy(&restored.stderr));
        // Restoring twice is refused: the database is no longer empty.
        let again = kca(&[&["restore", "--from", archive.to_str().unwrap()], &common[..]].concat());
        assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("not empty"));

        std::fs::copy(&master_key, data_dir.path().join("master.key")).unwrap();
        let restored = TestServer::resume(data_dir, database).await;
        let store = &restored.app.store;
        // Every certificate answered before the backup began, every revocation, audit entry
        // and token then recorded, as they were.
        for serial in &answered_before {
            store.get_certificate(cluster_id, serial).await.unwrap();
        }
        for serial in &revoked {
            let certificate = store.get_certificate(cluster_id, serial).await.unwrap();
            assert!(certificate.revoked_at.is_some(), "{serial} is revoked after the restore");
        }
        let audit_after = store.list_audit(None, None, 100_000).await.unwrap();
        for record in &audit_before {
            assert_eq!(
                audit_after.iter().find(|r| r.id == record.id),
                Some(record),
                "audit entry {}",
                record.id
            );
        }
        let tokens_after = store.list_tokens(None, 1000).await.unwrap();
        for (_, token) in &tokens_before {
            assert!(tokens_after.iter().any(|(_, t)| t == token), "token {}", token.id);
        }
        // The snapshot is consistent: each certificate with the audit entry of its transaction.
        let certificates = store
            .list_certificates(
                cluster_id,
                &kca::store::CertificateFilter { limit: 100_000, ..Default::default() },
                restored.app.now(),
            )
            .await
            .unwrap();
        let issue_events = audit_after.iter().filter(|r| r.entry.action == "certificate.issue").count();
        assert!(certificates.len() >= answered_before.len() + 4);
        assert_eq!(certificates.len(), issue_events, "{target:?}: certificates and their audit entries");

        // CRL Numbers continue above the old server's last, and the CRL verifies with the
        // original CA certificate.
        let crl = crl_der(&restored, "prod", "operators").await;
        let (number, listed) = crl_facts(&crl);
        assert!(number > old_last_number, "{target:?}: CRL Number {number} after {old_last_number}");
        for serial in &revoked {
            assert!(listed.contains(serial));
        }
        let crl_file = temp_file(scratch.path(), "restored.crl", &crl);
        let out = openssl_ok(&[
            "crl",
            "-inform",
            "DER",
            "-in",
            crl_file.to_str().unwrap(),
            "-CAfile",
            ca_file.to_str().unwrap(),
            "-noout",
        ]);
        assert!(out.contains("verify OK"), "{out}");
        // The old token works; the restored server issues under the original CA.
        let issued = issue_user(&restored, &admin, "prod", "after-restore", &["dev"]).await;
        let cert_file =
            temp_file(scratch.path(), "restored.pem", issued["certificate_pem"].as_str().unwrap().as_bytes());
        let out = openssl_ok(&["verify", "-CAfile", ca_file.to_str().unwrap(), cert_file.to_str().unwrap()]);
        assert!(out.contains(": OK"), "{out}");
        println!(
            "{backend:?} -> {target:?}: {} certificates, {} audit entries restored; CRL {number} > {old_last_number}",
            certificates.len(),
            audit_after.len()
        );
    }
}
