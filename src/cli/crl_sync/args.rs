//! The `kca crl-sync` command line: where to fetch from, where to write, what to push to HAProxy,
//! how often.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Document;
use crate::cli::haproxy::check_path;
use crate::cli::settings::ConnectionArgs;
use crate::config::parse_duration;
use crate::pki::AuthorityKind;

#[derive(Debug, clap::Args)]
#[command(after_help = "Example (HAProxy on the same host, every minute):\n  \
    kca crl-sync --url https://kca.example.com:8443 --cluster prod \\\n    \
    --ca-out /etc/haproxy/client-ca.pem --crl-out /etc/haproxy/client-crl.pem \\\n    \
    --map-out /etc/haproxy/revoked.map --haproxy-socket /run/haproxy/admin.sock \\\n    \
    --haproxy-crl-path /etc/haproxy/client-crl.pem --haproxy-ca-path /etc/haproxy/client-ca.pem \\\n    \
    --haproxy-map-path /etc/haproxy/revoked.map --interval 60s")]
pub struct CrlSyncArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Cluster name or id.
    #[arg(long)]
    pub cluster: String,
    /// Where to write the client CA bundle (HAProxy's `ca-file`).
    #[arg(long, value_name = "FILE")]
    pub ca_out: PathBuf,
    /// Where to write the CRL bundle, one CRL per CA of the bundle (HAProxy's `crl-file`).
    #[arg(long, value_name = "FILE")]
    pub crl_out: PathBuf,
    /// Where to write the revoked-serial map (`ssl_c_serial,hex,map(FILE)`).
    #[arg(long, value_name = "FILE")]
    pub map_out: Option<PathBuf>,
    /// The CA kinds whose clients come through the proxy, in bundle order.
    #[arg(long, value_delimiter = ',', default_value = "operators,control-plane,kubelet", value_parser = parse_kind)]
    pub kinds: Vec<AuthorityKind>,
    /// HAProxy's admin socket (`stats socket PATH level admin`): push changes with no reload.
    #[arg(long, value_name = "PATH", requires = "haproxy_crl_path")]
    pub haproxy_socket: Option<PathBuf>,
    /// The `crl-file` path as HAProxy's configuration names it.
    #[arg(long, value_name = "PATH", requires = "haproxy_socket", value_parser = haproxy_path)]
    pub haproxy_crl_path: Option<String>,
    /// The `ca-file` path as HAProxy's configuration names it: push the CA bundle too when it
    /// changes (a CA rotation).
    #[arg(long, value_name = "PATH", requires = "haproxy_socket", value_parser = haproxy_path)]
    pub haproxy_ca_path: Option<String>,
    /// The map path as HAProxy's configuration names it (needs --map-out).
    #[arg(long, value_name = "PATH", requires_all = ["haproxy_socket", "map_out"], value_parser = haproxy_path)]
    pub haproxy_map_path: Option<String>,
    /// Time between two passes, e.g. 60s or 5m.
    #[arg(long, default_value = "60s", value_parser = parse_duration, conflicts_with = "once")]
    pub interval: Duration,
    /// One pass, then exit: non-zero when anything failed.
    #[arg(long)]
    pub once: bool,
}

impl CrlSyncArgs {
    /// Where `document` is written; `None` for the map without `--map-out` (it is then not synced).
    pub fn out_path(&self, document: Document) -> Option<&Path> {
        match document {
            Document::CaBundle => Some(&self.ca_out),
            Document::CrlBundle => Some(&self.crl_out),
            Document::RevokedMap => self.map_out.as_deref(),
        }
    }

    /// The `kinds` query parameter: the kinds, comma-separated, in bundle order.
    pub fn kinds_query(&self) -> String {
        self.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(",")
    }
}

fn parse_kind(text: &str) -> Result<AuthorityKind, String> {
    AuthorityKind::parse(text.trim())
        .ok_or_else(|| format!("unknown kind {text:?}; valid: {}", AuthorityKind::valid_list()))
}

fn haproxy_path(text: &str) -> Result<String, String> {
    check_path(text).map(|()| text.to_string()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_options_need_each_other() {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: CrlSyncArgs,
        }
        let base = ["kca", "--url", "https://k", "--cluster", "c", "--ca-out", "a", "--crl-out", "b"];
        let parse = |extra: &[&str]| Wrapper::try_parse_from(base.iter().chain(extra)).map(|w| w.args);
        let args = parse(&[]).unwrap();
        assert_eq!(
            args.kinds,
            [AuthorityKind::Operators, AuthorityKind::ControlPlane, AuthorityKind::Kubelet]
        );
        assert_eq!(args.kinds_query(), "operators,control-plane,kubelet");
        assert_eq!(args.interval, Duration::from_secs(60));
        assert_eq!(args.out_path(Document::RevokedMap), None);
        assert!(parse(&["--haproxy-socket", "/s"]).is_err(), "the CRL path is needed");
        assert!(parse(&["--haproxy-crl-path", "/c"]).is_err(), "the socket is needed");
        assert!(
            parse(&["--haproxy-socket", "/s", "--haproxy-crl-path", "/c", "--haproxy-map-path", "/m"])
                .is_err()
        );
        assert!(parse(&["--haproxy-socket", "/s", "--haproxy-crl-path", "/c d"]).is_err());
        assert!(parse(&["--once", "--interval", "5s"]).is_err());
        let args = parse(&["--kinds", "operators,aggregation", "--once"]).unwrap();
        assert_eq!(args.kinds, [AuthorityKind::Operators, AuthorityKind::Aggregation]);
        assert!(parse(&["--kinds", "bogus"]).is_err());
    }
}
