//! The application state every handler and background task shares, and how it is opened.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::config::StoreArgs;
use crate::crl_publisher::CrlPublisher;
use crate::http::error::ApiError;
use crate::keyring::{Keyring, KeyringError, MasterKeySource, load_master_key};
use crate::published::{ClusterSnapshot, Published};
use crate::ratelimit::RateLimiter;
use crate::recorder::Recorder;
use crate::store::{self, Store, StoreError};
use crate::token::{TokenError, TokenService};

/// Runtime settings that handlers consult.
#[derive(Debug, Clone)]
pub struct Settings {
    pub public_read: bool,
    pub crl_validity: Duration,
    pub request_timeout: Duration,
    pub issue_rate_limit: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            public_read: true,
            crl_validity: Duration::from_secs(7 * 86_400),
            request_timeout: Duration::from_secs(30),
            issue_rate_limit: 0,
        }
    }
}

pub struct App {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub keyring: Keyring,
    pub tokens: TokenService,
    pub published: Published,
    pub recorder: Recorder,
    pub issue_limiter: RateLimiter,
    pub crl_publisher: CrlPublisher,
}

pub type AppState = Arc<App>;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("{0}")]
    Other(String),
}

/// Open the database (migrating it), the master key and the token key.
pub async fn open_store_and_keys(
    args: &StoreArgs,
) -> Result<(Arc<dyn Store>, Keyring, TokenService), StartupError> {
    std::fs::create_dir_all(&args.data_dir).map_err(|e| {
        StartupError::Other(format!("cannot create the data directory {}: {e}", args.data_dir.display()))
    })?;
    let store = store::connect(&args.database_url(), args.database_max_connections).await?;
    store.migrate().await?;
    let (master, source) = load_master_key(args)?;
    match source {
        MasterKeySource::GeneratedForDevelopment => tracing::warn!(
            path = %args.data_dir.join("master.key").display(),
            "created a master key in the data directory: for development only; \
             set KCA_MASTER_KEY or KCA_MASTER_KEY_FILE in production"
        ),
        MasterKeySource::DataDirectory => tracing::warn!(
            path = %args.data_dir.join("master.key").display(),
            "using the development master key from the data directory"
        ),
        MasterKeySource::Environment | MasterKeySource::File => {
            tracing::info!(source = ?source, version = master.version(), "master key loaded")
        }
    }
    let keyring = Keyring::new(master);
    keyring.verify_master_key(store.as_ref()).await?;
    let tokens =
        TokenService::load(store.as_ref(), &keyring, &args.token_issuer, &args.token_audience).await?;
    Ok((store, keyring, tokens))
}

impl App {
    pub async fn open(args: &StoreArgs, settings: Settings) -> Result<AppState, StartupError> {
        let (store, keyring, tokens) = open_store_and_keys(args).await?;
        let writers = if store.backend() == "postgres" { 2 } else { 1 };
        let recorder = Recorder::start(store.clone(), writers);
        let issue_limiter = RateLimiter::per_minute(settings.issue_rate_limit);
        let app = Arc::new(App {
            settings,
            store,
            keyring,
            tokens,
            published: Published::default(),
            recorder,
            issue_limiter,
            crl_publisher: CrlPublisher::default(),
        });
        app.preload().await?;
        Ok(app)
    }

    /// Load every live authority and CRL into memory, so they are served even if the database
    /// goes away before anyone asked for them.
    async fn preload(&self) -> Result<(), StoreError> {
        let mut after: Option<String> = None;
        loop {
            let page = self.store.list_clusters(after.as_deref(), None, 500).await?;
            for cluster in &page {
                self.refresh_snapshot(cluster.clone()).await?;
            }
            match page.last() {
                Some(last) if page.len() == 500 => after = Some(last.name.clone()),
                _ => break,
            }
        }
        Ok(())
    }

    /// The current time, at the microsecond precision the databases keep, so what a handler
    /// answers equals what a later read returns.
    pub fn now(&self) -> OffsetDateTime {
        let now = OffsetDateTime::now_utc();
        now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000).expect("a valid nanosecond")
    }

    /// Refuse an issuance when the caller has used up its rate.
    pub fn check_issue_rate(&self, subject: &str) -> Result<(), ApiError> {
        self.issue_limiter.check(subject, std::time::Instant::now()).map_err(ApiError::too_many_requests)
    }

    /// Run CPU-bound work (key generation, signing) on the blocking pool, off the async workers.
    pub async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        tokio::task::spawn_blocking(work).await.map_err(ApiError::internal)
    }

    /// Re-read a cluster's authorities and CRLs and publish them.
    pub async fn refresh_snapshot(
        &self,
        cluster: crate::store::ClusterRecord,
    ) -> Result<Arc<ClusterSnapshot>, StoreError> {
        let authorities = self.store.list_authorities(cluster.id).await?;
        let live: Vec<uuid::Uuid> = authorities
            .iter()
            .filter(|a| a.state != crate::store::AuthorityState::Retired)
            .map(|a| a.id)
            .collect();
        for crl in self.store.current_crls(&live).await? {
            self.published.put_crl(crl);
        }
        Ok(self.published.put_cluster(ClusterSnapshot { cluster, authorities }))
    }

    /// The published snapshot of a cluster: from memory, else from the database.
    pub async fn snapshot(&self, id_or_name: &str) -> Result<Arc<ClusterSnapshot>, ApiError> {
        if let Some(snapshot) = self.published.cluster(id_or_name) {
            return Ok(snapshot);
        }
        let cluster = self.store.find_cluster(id_or_name).await.map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found(format!("no cluster {id_or_name:?}")),
            other => other.into(),
        })?;
        Ok(self.refresh_snapshot(cluster).await?)
    }
}
