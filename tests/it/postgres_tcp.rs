//! kca's connections to Postgres over TCP set `TCP_NODELAY`. Without it, a Postgres message larger
//! than one TLS record (a batch of certificates, a CRL of a few hundred entries) waits for the
//! server's delayed ACK, 40 ms, on every round trip: sqlx 0.9.0 left it off (sqlx#4335) and kca
//! over TLS issued 650 kubeconfigs/s instead of 8,500.
//!
//! The check reads the socket option itself, no timing: the test finds kca's connections in
//! `pg_stat_activity` (their client ports), takes a duplicate of each socket of this process with
//! `pidfd_getfd` (the crate forbids unsafe code, so raw descriptors cannot be borrowed) and asks
//! the kernel for `TCP_NODELAY`.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;

use reqwest::Method;
use serde_json::json;
use sqlx::Connection;

use crate::common::*;
use kca::token::Scope;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_over_tls_set_tcp_nodelay() {
    let database = PgDatabase::create();
    // What users write, made explicit: TCP, and TLS (which the default `prefer` also picks here).
    let mut url = url::Url::parse(&database.url).unwrap();
    url.query_pairs_mut().append_pair("sslmode", "require");
    let server_port = url.port().unwrap_or(5432);
    let server =
        TestServer::start_with(Backend::Sqlite, |args| args.store.database_url = Some(url.to_string())).await;
    // Give the pool, the listener and the leader connection something to do: a cluster, an
    // issuance (the recorder's write) and a revocation (a CRL publication).
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    let issued = server
        .json(Method::POST, "/v1/clusters/prod/kubeconfigs", Some(&admin), Some(json!({"user": "jane"})), 201)
        .await;
    let serial = issued["serial"].as_str().unwrap();
    server
        .json(
            Method::POST,
            &format!("/v1/clusters/prod/certificates/{serial}/revoke"),
            Some(&admin),
            None,
            200,
        )
        .await;

    let mut observer = sqlx::PgConnection::connect(&database.url).await.unwrap();
    let connections: Vec<(i32, Option<bool>)> = sqlx::query_as(
        "SELECT a.client_port, s.ssl FROM pg_stat_activity a LEFT JOIN pg_stat_ssl s USING (pid) \
         WHERE a.datname = current_database() AND a.application_name = 'kca'",
    )
    .fetch_all(&mut observer)
    .await
    .unwrap();
    assert!(connections.len() >= 2, "kca holds few connections: {connections:?}");

    let sockets = own_tcp_sockets();
    for (client_port, ssl) in &connections {
        assert_eq!(*ssl, Some(true), "the connection from port {client_port} is not TLS");
        let (_, socket) = sockets
            .iter()
            .find(|(addrs, _)| addrs.0.port() == *client_port as u16 && addrs.1.port() == server_port)
            .unwrap_or_else(|| {
                panic!("none of this process's {} TCP sockets is from port {client_port}", sockets.len())
            });
        assert!(
            socket.nodelay().unwrap(),
            "kca's Postgres connection from port {client_port} leaves TCP_NODELAY off: \
             TLS records wait for delayed ACKs (sqlx#4335)"
        );
    }
    server.stop().await;
}

/// A duplicate of every TCP socket this process holds, with its local and peer address.
fn own_tcp_sockets() -> Vec<((SocketAddr, SocketAddr), TcpStream)> {
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};
    let me = pidfd_open(getpid(), PidfdFlags::empty()).expect("pidfd_open on this process");
    let mut sockets = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let Some(number) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else { continue };
        if !is_socket {
            continue;
        }
        // The descriptor may have been closed meanwhile; then there is nothing to check.
        let Ok(duplicate): Result<OwnedFd, _> = pidfd_getfd(&me, number, PidfdGetfdFlags::empty()) else {
            continue;
        };
        let stream = TcpStream::from(duplicate);
        if let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) {
            sockets.push(((local, peer), stream));
        }
    }
    sockets
}
