//! `kca crl-sync`: keep a proxy's client CA bundle, CRL bundle and revoked-serial map in step with
//! kca, on disk and, through its runtime API, in a running HAProxy.
//!
//! Every pass fetches the three documents conditionally (`fetch`), checks the CRLs against the CAs
//! before anything is written (`verify`), replaces the changed files atomically and pushes them to
//! HAProxy with no reload (`apply`), and remembers what it accepted (`state`, a small file beside
//! `--crl-out`). A failed check or push keeps the old files: `--once` exits non-zero, the loop
//! logs and tries again at the next tick.

mod apply;
mod args;
mod fetch;
mod state;
mod verify;

use anyhow::bail;
use time::OffsetDateTime;

pub use args::CrlSyncArgs;
pub use verify::pem_blocks;

use super::client::Client;
use super::haproxy::Runtime;
use fetch::Fetcher;
use state::State;

/// The documents a pass syncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Document {
    CaBundle,
    CrlBundle,
    RevokedMap,
}

impl Document {
    pub const ALL: [Document; 3] = [Document::CaBundle, Document::CrlBundle, Document::RevokedMap];

    /// The last segment of its URL under `/v1/clusters/{cluster}/`.
    pub fn endpoint(self) -> &'static str {
        match self {
            Document::CaBundle => "client-ca.pem",
            Document::CrlBundle => "client-crl.pem",
            Document::RevokedMap => "revoked.map",
        }
    }
}

/// One `T` for each document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Documents<T> {
    pub ca_bundle: T,
    pub crl_bundle: T,
    pub revoked_map: T,
}

impl<T> Documents<T> {
    pub fn from_fn(mut value: impl FnMut(Document) -> T) -> Self {
        Self {
            ca_bundle: value(Document::CaBundle),
            crl_bundle: value(Document::CrlBundle),
            revoked_map: value(Document::RevokedMap),
        }
    }

    pub fn get(&self, document: Document) -> &T {
        match document {
            Document::CaBundle => &self.ca_bundle,
            Document::CrlBundle => &self.crl_bundle,
            Document::RevokedMap => &self.revoked_map,
        }
    }

    pub fn get_mut(&mut self, document: Document) -> &mut T {
        match document {
            Document::CaBundle => &mut self.ca_bundle,
            Document::CrlBundle => &mut self.crl_bundle,
            Document::RevokedMap => &mut self.revoked_map,
        }
    }
}

/// Sync once with `--once`, else at every `--interval` until SIGTERM or SIGINT.
pub async fn run(args: CrlSyncArgs) -> anyhow::Result<()> {
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
    let stop = crate::server::shutdown_signal();
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

struct Syncer {
    args: CrlSyncArgs,
    fetcher: Fetcher,
    state: State,
    haproxy: Option<Runtime>,
}

impl Syncer {
    fn open(client: Client, args: CrlSyncArgs) -> anyhow::Result<Self> {
        let fetcher = Fetcher::new(client, args.cluster.clone(), args.kinds_query());
        let state = State::load(&args, fetcher.source())?;
        let haproxy = args.haproxy_socket.as_deref().map(Runtime::new);
        Ok(Self { args, fetcher, state, haproxy })
    }

    /// One pass: fetch, verify, apply, remember.
    async fn pass(&mut self) -> anyhow::Result<()> {
        let synced = &self.state.synced;
        let ca_bundle = self.fetcher.fetch(Document::CaBundle, synced.ca_bundle.as_ref()).await?;
        let crl_bundle = self.fetcher.fetch(Document::CrlBundle, synced.crl_bundle.as_ref()).await?;
        let revoked_map = match self.args.map_out {
            Some(_) => Some(self.fetcher.fetch(Document::RevokedMap, synced.revoked_map.as_ref()).await?),
            None => None,
        };
        let verified = verify::verify(
            &ca_bundle.body,
            &crl_bundle.body,
            revoked_map.as_ref().map(|m| m.body.as_slice()),
            OffsetDateTime::now_utc(),
            &self.state.crl_numbers,
        )?;
        let changed = Documents::from_fn(|document| {
            synced.get(document).as_ref().map(|s| &s.body) != verified.bodies.get(document).as_ref()
        });

        self.state.accept(&verified.crls);
        let applied = apply::apply(&self.args, self.haproxy.as_ref(), &changed, &verified).await;
        let etags = Documents {
            ca_bundle: ca_bundle.etag,
            crl_bundle: crl_bundle.etag,
            revoked_map: revoked_map.and_then(|m| m.etag),
        };
        self.state.record(verified.bodies.clone(), etags, &changed, applied.is_ok());
        self.state.save()?;
        applied?;

        if let Some(stale) = verified.past_half_life(OffsetDateTime::now_utc()) {
            tracing::warn!(
                cluster.name = %self.args.cluster,
                crl.issuer = %stale.issuer,
                crl.number = stale.number,
                "this CRL is past half its validity: is kca re-signing its CRLs?"
            );
        }
        let updated: Vec<&str> =
            Document::ALL.into_iter().filter(|d| *changed.get(*d)).map(Document::endpoint).collect();
        tracing::info!(
            cluster.name = %self.args.cluster,
            crl.count = verified.crls.len(),
            crl.numbers = %verified.describe(),
            crl.next_update = %verified.next_update(),
            revoked.count = verified.revoked.as_ref().map_or(0, Vec::len),
            updated = %updated.join(","),
            "{}",
            if updated.is_empty() {
                "revocation data verified, unchanged"
            } else {
                "revocation data verified and updated"
            }
        );
        Ok(())
    }
}
