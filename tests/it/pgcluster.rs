//! A throwaway Postgres cluster of the test's own (initdb + pg_ctl on a free port), so a test can
//! stop and start "the database" without touching the shared one.

use std::path::PathBuf;
use std::process::Command;

use crate::common::free_port;

const BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct PgCluster {
    pub port: u16,
    dir: PathBuf,
    _holder: tempfile::TempDir,
}

fn as_postgres(program: &str, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--", &format!("{BIN}/{program}")])
        .args(args)
        .output()
        .expect("runuser runs")
}

impl PgCluster {
    /// initdb (trust authentication, fsync off: it is thrown away) and start it.
    pub fn start() -> Self {
        let holder = tempfile::tempdir().unwrap();
        let dir = holder.path().join("data");
        Command::new("chown").args(["-R", "postgres:postgres"]).arg(holder.path()).status().unwrap();
        let output = as_postgres(
            "initdb",
            &["-D", dir.to_str().unwrap(), "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        assert!(output.status.success(), "initdb: {}", String::from_utf8_lossy(&output.stderr));
        let cluster = Self { port: free_port(), dir, _holder: holder };
        cluster.start_server();
        cluster
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn start_server(&self) {
        let options = format!("-p {} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off", self.port);
        let log = self.dir.with_file_name("log");
        let output = as_postgres(
            "pg_ctl",
            &["-D", self.dir.to_str().unwrap(), "-o", &options, "-l", log.to_str().unwrap(), "-w", "start"],
        );
        assert!(output.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// Stop at once, dropping every connection, as a crash or failover would.
    pub fn stop_server(&self) {
        let output =
            as_postgres("pg_ctl", &["-D", self.dir.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
        assert!(output.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&output.stderr));
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = as_postgres("pg_ctl", &["-D", self.dir.to_str().unwrap(), "-m", "immediate", "stop"]);
    }
}
