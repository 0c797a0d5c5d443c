//! Keys at rest: sealed in the database, opened only by the right master key.

use reqwest::Method;

use crate::common::*;
use crate::on_both_backends;
use kca::token::Scope;

/// The DER prefix of a PKCS#8 P-256 key (version 0, id-ecPublicKey, prime256v1), as it would
/// appear in a dump if a key were stored in the clear.
const PKCS8_P256_PREFIX: &str = "020100301306072a8648ce3d020106082a8648ce3d030107";

on_both_backends!(a_database_dump_holds_no_plaintext_key, a_wrong_master_key_fails_loudly);

async fn a_database_dump_holds_no_plaintext_key(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token(&[Scope::Admin]).await;
    for name in ["one", "two"] {
        server.create_cluster(&admin, name).await;
    }
    let dump = match backend {
        Backend::Postgres => run_ok("pg_dump", &[&server.database_url()]),
        Backend::Sqlite => {
            let path = server.data_dir.path().join("kca.db");
            // Checkpoint the WAL into the file first, then read every byte of it.
            run_ok("sqlite3", &[path.to_str().unwrap(), "PRAGMA wal_checkpoint(TRUNCATE);"]);
            let bytes = std::fs::read(&path).unwrap();
            assert!(bytes.len() > 10_000, "the database file holds the clusters");
            hex::encode(&bytes) + &String::from_utf8_lossy(&bytes)
        }
    };
    assert!(dump.contains("sealed_key") || backend == Backend::Sqlite);
    assert!(!dump.contains("PRIVATE KEY"));
    assert!(!dump.to_lowercase().contains(PKCS8_P256_PREFIX), "a plaintext PKCS#8 key is in the dump");
    // The sealed keys are there, and they are all different.
    let (_, _, bundle) =
        server.send(Method::GET, "/v1/clusters/one/authorities/etcd/ca.pem", None, None).await;
    assert!(bundle.contains("BEGIN CERTIFICATE"));
}

async fn a_wrong_master_key_fails_loudly(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    let database_url = server.database_url();
    let (data_dir, database) = server.stop().await;

    // Another master key: the server refuses to start, saying why, and nothing is garbage.
    let other_key = data_dir.path().join("other.key");
    std::fs::write(&other_key, [7u8; 32]).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kca"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.path())
        .arg("--database-url")
        .arg(&database_url)
        .arg("--master-key-file")
        .arg(&other_key)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("master key does not open the keys sealed in this database"), "{stderr}");

    // The signing path refuses too, should a key be swapped under a running keyring.
    let mut args = serve_args(data_dir.path(), Some(database_url.clone()));
    let (store, keyring, _) = kca::app::open_store_and_keys(&args.store).await.unwrap();
    let cluster = store.find_cluster("prod").await.unwrap();
    let authorities = store.list_authorities(cluster.id).await.unwrap();
    assert!(keyring.signer(&authorities[0]).is_ok());
    args.store.master_key_file = Some(other_key);
    let (master, _) = kca::keyring::load_master_key(&args.store).unwrap();
    let wrong = kca::keyring::Keyring::new(master);
    let err = wrong.signer(&authorities[0]).unwrap_err();
    assert!(err.to_string().contains("master key does not open"), "{err}");
    // A sealed key moved to another authority's row does not open either.
    let mut moved = authorities[1].clone();
    moved.sealed_key = authorities[0].sealed_key.clone();
    assert!(
        kca::keyring::Keyring::new(
            kca::keyring::load_master_key(&serve_args(data_dir.path(), None).store).unwrap().0
        )
        .signer(&moved)
        .is_err()
    );
    drop(database);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_is_append_only_in_the_database() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let server = TestServer::start(backend).await;
        let admin = server.token(&[Scope::Admin]).await;
        server.create_cluster(&admin, "prod").await;
        let url = server.database_url();
        let statement = "UPDATE audit_events SET actor = 'mallory'";
        let output = match backend {
            Backend::Postgres => std::process::Command::new("psql")
                .args([&url, "-v", "ON_ERROR_STOP=1", "-c", statement])
                .output(),
            Backend::Sqlite => std::process::Command::new("sqlite3")
                .arg(server.data_dir.path().join("kca.db"))
                .arg(statement)
                .output(),
        }
        .unwrap();
        assert!(!output.status.success(), "{backend:?}: the update went through");
        assert!(String::from_utf8_lossy(&output.stderr).contains("append-only"));
    }
}
