//! `kca crl-sync`: keep a proxy's client CA bundle, CRL bundle and revoked-serial map in step with
//! kca, on disk and, through its runtime API, in a running HAProxy.
//!
//! Every pass fetches the three documents conditionally (`If-None-Match`), then checks the CRLs
//! against the CAs (issuer, key identifier, signature, freshness, CRL Number never going back,
//! one CRL per CA in bundle order) before anything is written. Files are replaced atomically;
//! HAProxy gets the map, the CRLs and (when asked) the CAs with no reload. A failed check or push
//! keeps the old files: `--once` exits non-zero, the loop logs and tries again at the next tick.
//!
//! Beside `--crl-out` a small state file (`<crl-out>.state.json`) keeps the last accepted CRL
//! Number per CA (by SKI) and the ETags of what was last synced, so a restart neither refetches
//! needlessly nor accepts an older CRL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Method;
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_NONE_MATCH};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::client::Client;
use super::haproxy::{Runtime, check_path};
use super::output::write_public_file;
use super::settings::ConnectionArgs;
use crate::config::parse_duration;
use crate::pki::crl_check::{CheckedCrl, check_bundle};
use crate::pki::{AuthorityKind, to_pem};

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

fn parse_kind(text: &str) -> Result<AuthorityKind, String> {
    AuthorityKind::parse(text.trim())
        .ok_or_else(|| format!("unknown kind {text:?}; valid: {}", AuthorityKind::valid_list()))
}

fn haproxy_path(text: &str) -> Result<String, String> {
    check_path(text).map(|()| text.to_string()).map_err(|e| e.to_string())
}

pub async fn run(args: CrlSyncArgs) -> anyhow::Result<()> {
    crate::telemetry::init();
    if args.interval.is_zero() {
        bail!("--interval must be at least one second");
    }
    let settings = args.connection.resolve()?;
    let client = Client::new(&settings)?;
    let mut syncer = Syncer::open(client, args)?;
    if syncer.args.once {
        return syncer.pass().await;
    }
    let mut ticker = tokio::time::interval(syncer.args.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = &mut stop => return Ok(()),
        }
        tokio::select! {
            result = syncer.pass() => if let Err(err) = result {
                tracing::error!(
                    cluster.name = %syncer.args.cluster,
                    error = %format!("{err:#}"),
                    "crl-sync pass failed; trying again in {}s",
                    syncer.args.interval.as_secs()
                );
            },
            () = &mut stop => return Ok(()),
        }
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The three documents of a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Document {
    CaBundle,
    CrlBundle,
    RevokedMap,
}

impl Document {
    const ALL: [Document; 3] = [Document::CaBundle, Document::CrlBundle, Document::RevokedMap];

    fn endpoint(self) -> &'static str {
        match self {
            Document::CaBundle => "client-ca.pem",
            Document::CrlBundle => "client-crl.pem",
            Document::RevokedMap => "revoked.map",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What was last synced of one document: the server's ETag and the bytes written.
#[derive(Clone, Debug)]
struct Synced {
    etag: Option<String>,
    body: Vec<u8>,
}

/// `<crl-out>.state.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    /// The last accepted CRL Number per CA, keyed by the CA's SKI (hex).
    #[serde(default)]
    crl_numbers: BTreeMap<String, u64>,
    /// Server, cluster and kinds the documents came from; ETags of another source are not reused.
    #[serde(default)]
    source: Option<String>,
    /// By endpoint name: ETag and SHA-256 of the file written.
    #[serde(default)]
    documents: BTreeMap<String, DocumentState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DocumentState {
    etag: Option<String>,
    sha256: String,
}

struct Syncer {
    client: Client,
    args: CrlSyncArgs,
    kinds: String,
    source: String,
    state_path: PathBuf,
    numbers: BTreeMap<String, u64>,
    synced: [Option<Synced>; 3],
    haproxy: Option<Runtime>,
}

/// A fetched (or unchanged) document.
struct Fetched {
    etag: Option<String>,
    body: Vec<u8>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// `<file>.state.json` beside `file`.
pub fn state_path(crl_out: &Path) -> PathBuf {
    let mut name = crl_out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".state.json");
    crl_out.with_file_name(name)
}

impl Syncer {
    fn open(client: Client, args: CrlSyncArgs) -> anyhow::Result<Self> {
        let kinds = args.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(",");
        let source = format!("{} {} {kinds}", client.base_url(), args.cluster);
        let state_path = state_path(&args.crl_out);
        let state: StateFile = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is not a crl-sync state file; it keeps the last accepted CRL Numbers, so it is \
                     not replaced silently: fix or remove it",
                    state_path.display()
                )
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => StateFile::default(),
            Err(err) => return Err(err).with_context(|| format!("reading {}", state_path.display())),
        };
        let mut synced: [Option<Synced>; 3] = Default::default();
        if state.source.as_deref() == Some(source.as_str()) {
            for document in Document::ALL {
                let (Some(recorded), Some(path)) =
                    (state.documents.get(document.endpoint()), output_path(&args, document))
                else {
                    continue;
                };
                // Reuse the ETag only while the file is exactly what was written.
                if let Ok(body) = std::fs::read(path)
                    && sha256_hex(&body) == recorded.sha256
                {
                    synced[document.index()] = Some(Synced { etag: recorded.etag.clone(), body });
                }
            }
        }
        let haproxy = args.haproxy_socket.as_deref().map(Runtime::new);
        Ok(Self { client, kinds, source, state_path, numbers: state.crl_numbers, synced, haproxy, args })
    }

    fn documents(&self) -> Vec<Document> {
        let mut documents = vec![Document::CaBundle, Document::CrlBundle];
        if self.args.map_out.is_some() {
            documents.push(Document::RevokedMap);
        }
        documents
    }

    /// GET one document, with `If-None-Match` when its last synced copy is known.
    async fn fetch(&self, document: Document) -> anyhow::Result<Fetched> {
        let previous = self.synced[document.index()].as_ref();
        let segments = ["v1", "clusters", self.args.cluster.as_str(), document.endpoint()];
        let mut request =
            self.client.maybe_authorized(Method::GET, &segments).query(&[("kinds", self.kinds.as_str())]);
        if let Some(etag) = previous.and_then(|p| p.etag.as_deref()) {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let response =
            self.client.send(request).await.with_context(|| format!("fetching {}", document.endpoint()))?;
        let etag = response.headers().get(ETAG).and_then(|v| v.to_str().ok()).map(str::to_string);
        if response.status() == StatusCode::NOT_MODIFIED {
            let previous = previous.context("the server answered 304 to an unconditional request")?;
            return Ok(Fetched { etag: etag.or_else(|| previous.etag.clone()), body: previous.body.clone() });
        }
        let body =
            response.bytes().await.with_context(|| format!("reading {}", document.endpoint()))?.to_vec();
        Ok(Fetched { etag, body })
    }

    /// One pass: fetch, check, write, push, remember.
    async fn pass(&mut self) -> anyhow::Result<()> {
        let mut fetched: [Option<Fetched>; 3] = Default::default();
        for document in self.documents() {
            fetched[document.index()] = Some(self.fetch(document).await?);
        }
        let ca = fetched[0].as_ref().expect("always fetched");
        let crl = fetched[1].as_ref().expect("always fetched");
        let cas = pem_blocks(&ca.body, "CERTIFICATE").context("client-ca.pem")?;
        let crls = pem_blocks(&crl.body, "X509 CRL").context("client-crl.pem")?;
        let checked = check_bundle(&cas, &crls, OffsetDateTime::now_utc(), &self.numbers)
            .context("the CRLs from kca failed verification; the files are left as they were")?;
        let map = fetched[2]
            .as_ref()
            .map(|m| parse_map(&m.body))
            .transpose()
            .context("revoked.map failed verification; the files are left as they were")?;

        // What goes to disk and to HAProxy is re-encoded from what was checked, nothing else.
        let bodies: [Option<Vec<u8>>; 3] = [
            Some(cas.iter().map(|der| to_pem("CERTIFICATE", der)).collect::<String>().into_bytes()),
            Some(crls.iter().map(|der| to_pem("X509 CRL", der)).collect::<String>().into_bytes()),
            map.as_ref().map(|entries| map_text(entries).into_bytes()),
        ];
        let changed: Vec<Document> = self
            .documents()
            .into_iter()
            .filter(|d| self.synced[d.index()].as_ref().map(|s| &s.body) != bodies[d.index()].as_ref())
            .collect();

        for checked in &checked {
            let last = self.numbers.entry(checked.key_id.clone()).or_insert(0);
            *last = (*last).max(checked.number);
        }
        let applied = self.apply(&changed, &bodies, map.as_deref()).await;
        for document in self.documents() {
            let index = document.index();
            self.synced[index] = if applied.is_err() && changed.contains(&document) {
                // Fetched again and pushed again next time.
                None
            } else {
                let etag = fetched[index].as_mut().and_then(|f| f.etag.take());
                bodies[index].clone().map(|body| Synced { etag, body })
            };
        }
        self.save_state()?;
        applied?;

        let unchanged = changed.is_empty();
        let now = OffsetDateTime::now_utc();
        if let Some(stale) =
            checked.iter().find(|c| now > c.this_update + (c.next_update - c.this_update) / 2)
        {
            tracing::warn!(
                cluster.name = %self.args.cluster,
                crl.issuer = %stale.issuer,
                crl.number = stale.number,
                "this CRL is past half its validity: is kca re-signing its CRLs?"
            );
        }
        let next_update = checked
            .iter()
            .map(|c| c.next_update)
            .min()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        tracing::info!(
            cluster.name = %self.args.cluster,
            crl.count = checked.len(),
            crl.numbers = %describe(&checked),
            crl.next_update = %next_update,
            revoked.count = map.as_ref().map_or(0, Vec::len),
            updated = %changed.iter().map(|d| d.endpoint()).collect::<Vec<_>>().join(","),
            "{}",
            if unchanged { "revocation data verified, unchanged" } else { "revocation data verified and updated" }
        );
        Ok(())
    }

    /// Write the changed files (CRLs before CAs, so a CA never sits on disk without its CRL), then
    /// push them to HAProxy: the map first (it blocks on every request, old connections too),
    /// then the CRLs, then the CAs.
    async fn apply(
        &self,
        changed: &[Document],
        bodies: &[Option<Vec<u8>>; 3],
        map: Option<&[(String, String)]>,
    ) -> anyhow::Result<()> {
        for document in [Document::RevokedMap, Document::CrlBundle, Document::CaBundle] {
            if changed.contains(&document)
                && let (Some(path), Some(body)) =
                    (output_path(&self.args, document), &bodies[document.index()])
            {
                write_public_file(path, body)?;
            }
        }
        let Some(haproxy) = &self.haproxy else { return Ok(()) };
        let text = |document: Document| {
            String::from_utf8_lossy(bodies[document.index()].as_deref().unwrap_or_default()).into_owned()
        };
        if changed.contains(&Document::RevokedMap)
            && let (Some(path), Some(entries)) = (&self.args.haproxy_map_path, map)
        {
            haproxy.replace_map(path, entries).await.context("updating HAProxy's map")?;
        }
        if changed.contains(&Document::CrlBundle)
            && let Some(path) = &self.args.haproxy_crl_path
        {
            haproxy
                .replace_crl_file(path, &text(Document::CrlBundle))
                .await
                .context("updating HAProxy's CRLs")?;
        }
        if changed.contains(&Document::CaBundle)
            && let Some(path) = &self.args.haproxy_ca_path
        {
            haproxy
                .replace_ca_file(path, &text(Document::CaBundle))
                .await
                .context("updating HAProxy's CAs")?;
        }
        for (document, flag, pushed) in [
            (Document::CaBundle, "--haproxy-ca-path", self.args.haproxy_ca_path.is_some()),
            (Document::RevokedMap, "--haproxy-map-path", self.args.haproxy_map_path.is_some()),
        ] {
            if changed.contains(&document) && !pushed {
                tracing::warn!(
                    cluster.name = %self.args.cluster,
                    "{} changed on disk only: HAProxy uses it from its next reload (pass {flag} to push it)",
                    document.endpoint()
                );
            }
        }
        Ok(())
    }

    fn save_state(&self) -> anyhow::Result<()> {
        let documents = self
            .documents()
            .into_iter()
            .filter_map(|d| {
                let synced = self.synced[d.index()].as_ref()?;
                Some((
                    d.endpoint().to_string(),
                    DocumentState { etag: synced.etag.clone(), sha256: sha256_hex(&synced.body) },
                ))
            })
            .collect();
        let state =
            StateFile { crl_numbers: self.numbers.clone(), source: Some(self.source.clone()), documents };
        let mut text = serde_json::to_vec_pretty(&state)?;
        text.push(b'\n');
        if std::fs::read(&self.state_path).is_ok_and(|current| current == text) {
            return Ok(());
        }
        write_public_file(&self.state_path, &text)
    }
}

fn output_path(args: &CrlSyncArgs, document: Document) -> Option<&Path> {
    match document {
        Document::CaBundle => Some(&args.ca_out),
        Document::CrlBundle => Some(&args.crl_out),
        Document::RevokedMap => args.map_out.as_deref(),
    }
}

/// `issuer-key-prefix#number` for each CRL, for the log.
fn describe(checked: &[CheckedCrl]) -> String {
    checked
        .iter()
        .map(|c| format!("{}#{}", &c.key_id[..c.key_id.len().min(8)], c.number))
        .collect::<Vec<_>>()
        .join(",")
}

/// The DER contents of every PEM block of `text`, which must all carry `label`.
pub fn pem_blocks(text: &[u8], label: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let blocks = pem::parse_many(text).context("not PEM")?;
    if let Some(other) = blocks.iter().find(|b| b.tag() != label) {
        bail!("a {:?} block where only {label:?} blocks belong", other.tag());
    }
    Ok(blocks.into_iter().map(|b| b.into_contents()).collect())
}

/// The revoked-serial map: `<SERIAL HEX UPPERCASE> <reason>` a line, nothing else.
fn parse_map(body: &[u8]) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).context("not UTF-8")?;
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut fields = line.split(' ');
        let (Some(serial), Some(reason), None) = (fields.next(), fields.next(), fields.next()) else {
            bail!("line {} is not `<serial> <reason>`", number + 1);
        };
        let serial_ok = (1..=40).contains(&serial.len())
            && serial.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
        let reason_ok = (1..=32).contains(&reason.len()) && reason.bytes().all(|b| b.is_ascii_alphabetic());
        if !serial_ok || !reason_ok {
            bail!("line {} is not `<SERIAL HEX> <reason>`", number + 1);
        }
        entries.push((serial.to_string(), reason.to_string()));
    }
    Ok(entries)
}

fn map_text(entries: &[(String, String)]) -> String {
    entries.iter().map(|(serial, reason)| format!("{serial} {reason}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_is_serials_and_reasons_only() {
        let entries = parse_map(b"0A1B keyCompromise\n\nFF unspecified\n").unwrap();
        assert_eq!(entries, [("0A1B".into(), "keyCompromise".into()), ("FF".into(), "unspecified".into())]);
        assert_eq!(map_text(&entries), "0A1B keyCompromise\nFF unspecified\n");
        assert!(parse_map(b"").unwrap().is_empty());
        for bad in [
            &b"0a1b keyCompromise\n"[..],
            b"0A1B\n",
            b"0A1B key compromise\n",
            b"0A1B keyCompromise;show info\n",
            b"ZZ unspecified\n",
        ] {
            assert!(parse_map(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn pem_bundles_hold_one_label() {
        let crl = to_pem("X509 CRL", b"\x30\x00");
        assert_eq!(pem_blocks(format!("{crl}{crl}").as_bytes(), "X509 CRL").unwrap().len(), 2);
        let cert = to_pem("CERTIFICATE", b"\x30\x00");
        assert!(pem_blocks(format!("{crl}{cert}").as_bytes(), "X509 CRL").is_err());
        assert!(pem_blocks(to_pem("PRIVATE KEY", b"\x30\x00").as_bytes(), "CERTIFICATE").is_err());
    }

    #[test]
    fn the_state_file_sits_beside_the_crl_file() {
        assert_eq!(
            state_path(Path::new("/etc/haproxy/client-crl.pem")),
            Path::new("/etc/haproxy/client-crl.pem.state.json")
        );
    }

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
        assert_eq!(args.interval, Duration::from_secs(60));
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
