//! The application state every handler and background task shares, and how it is opened.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::clusters::sign_crl_now;
use crate::config::StoreArgs;
use crate::crl_publisher::{CrlPublisher, PublishError};
use crate::keyring::{Keyring, KeyringError, MasterKeySource, load_master_key};
use crate::metrics::{Metrics, render_gauges};
use crate::pki::crl::crl_number_floor;
use crate::published::CachedCrl;
use crate::published::{ClusterSnapshot, Published};
use crate::ratelimit::RateLimiter;
use crate::recorder::Recorder;
use crate::store::{self, Store, StoreError};
use crate::store::{AuthorityRecord, TokenRecord};
use crate::token::{Claims, TokenError, TokenRequest, TokenService};

/// Runtime settings that handlers consult.
#[derive(Debug, Clone)]
pub struct Settings {
    pub public_read: bool,
    pub crl_validity: Duration,
    pub request_timeout: Duration,
    pub issue_rate_limit: u32,
    /// Origins allowed to call the API from a browser (CORS); none by default.
    pub cors_origins: Vec<String>,
    /// Send `Strict-Transport-Security` (when serving HTTPS).
    pub hsts: bool,
    /// Single sign-on, when configured.
    pub oidc: Option<crate::oidc::OidcSettings>,
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
    pub metrics: Metrics,
    /// The OpenID Connect relying party, when single sign-on is configured.
    pub oidc: Option<Arc<crate::oidc::Oidc>>,
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
    let _setup = lock_data_dir(&args.data_dir).await?;
    let url = args.database_url().map_err(StartupError::Other)?;
    let store = store::connect(&url, args.database_max_connections).await?;
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
    let token = args.pkcs11.config().map(crate::pkcs11::Token::new);
    let keyring = Keyring::new(master).with_token(token);
    keyring.verify_master_key(store.as_ref()).await?;
    let tokens = TokenService::load(
        store.as_ref(),
        keyring.master(),
        &args.token_issuer,
        &args.token_audience,
        args.token_max_lifetime,
    )
    .await?;
    Ok((store, keyring, tokens))
}

/// Take `<data-dir>/kca.lock` for the setup above, released when the file is dropped. `serve` and
/// `token create` often start together on a fresh directory: without it both would run the SQLite
/// migrations (SQLite has no migration lock, and one fails on a table the other just made) and
/// both could write a different development `master.key`.
pub(crate) async fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, StartupError> {
    let path = dir.join("kca.lock");
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .map_err(|e| StartupError::Other(e.to_string()))?
    .map_err(|e: std::io::Error| StartupError::Other(format!("cannot lock {}/kca.lock: {e}", dir.display())))
}

impl App {
    pub async fn open(args: &StoreArgs, settings: Settings) -> Result<AppState, StartupError> {
        let (store, keyring, tokens) = open_store_and_keys(args).await?;
        if let Ok(token) = keyring.token() {
            // Reached now to tell the operator; a token that is away does not stop the server:
            // bundles and CRLs are served, issuance from its keys answers 503 until it is back.
            let token = token.clone();
            let label = token.label().to_string();
            match tokio::task::spawn_blocking(move || token.connect()).await {
                Ok(Ok(())) => tracing::info!(pkcs11.token = %label, "PKCS#11 token ready"),
                Ok(Err(_)) => {} // reported by the token
                Err(err) => return Err(StartupError::Other(err.to_string())),
            }
        }
        // One writer: concurrent issuances queue while it commits and go out in the next batch,
        // which costs the database less than two half-size batches.
        let recorder = Recorder::start(store.clone());
        let issue_limiter = RateLimiter::per_minute(settings.issue_rate_limit);
        let oidc = match &settings.oidc {
            Some(oidc) => Some(Arc::new(crate::oidc::Oidc::new(oidc.clone()).map_err(StartupError::Other)?)),
            None => None,
        };
        let app = Arc::new(App {
            settings,
            store,
            keyring,
            tokens,
            published: Published::default(),
            recorder,
            issue_limiter,
            crl_publisher: CrlPublisher::default(),
            metrics: Metrics::default(),
            oidc,
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
                self.refresh_snapshot(&cluster.id.to_string()).await?;
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

    /// What needs an operator's attention soon: a CRL expiring within a day (re-signing is
    /// failing), a CA generation expiring within 90 days (rotate it).
    pub fn expiry_warnings(&self, now: OffsetDateTime) -> Vec<String> {
        let mut warnings = Vec::new();
        for snapshot in self.published.snapshots() {
            for authority in
                snapshot.authorities.iter().filter(|a| a.state != crate::store::AuthorityState::Retired)
            {
                let what = format!(
                    "cluster {} {} CA generation {}",
                    snapshot.cluster.name, authority.kind, authority.generation
                );
                if authority.not_after - now < time::Duration::days(90) {
                    warnings.push(format!("{what} expires at {}", authority.not_after));
                }
                if let Some(crl) = self.published.crl(authority.id)
                    && crl.record.next_update - now < time::Duration::days(1)
                {
                    warnings.push(format!("the CRL of {what} expires at {}", crl.record.next_update));
                }
            }
        }
        warnings
    }

    /// Every metric, in Prometheus text format, the leaf expiries read from the database.
    pub async fn metrics_text(&self, now: OffsetDateTime) -> Result<String, crate::store::StoreError> {
        let expiries = self.store.earliest_leaf_expiries(now).await?;
        Ok(self.render_metrics(now, &expiries))
    }

    /// Every metric, in Prometheus text format. `expiries`: the earliest leaf expiry per cluster
    /// and profile; label values are the cluster's validated name and a known profile name, never
    /// a string a client sent.
    pub fn render_metrics(
        &self,
        now: OffsetDateTime,
        expiries: &[(uuid::Uuid, String, OffsetDateTime)],
    ) -> String {
        let mut out = String::new();
        self.metrics.render_counters(&mut out);
        let (mut crl_age, mut crl_next, mut crl_number, mut ca_expiry) = (vec![], vec![], vec![], vec![]);
        for snapshot in self.published.snapshots() {
            for authority in
                snapshot.authorities.iter().filter(|a| a.state != crate::store::AuthorityState::Retired)
            {
                let labels = vec![
                    ("cluster", snapshot.cluster.name.clone()),
                    ("authority", authority.kind.to_string()),
                    ("generation", authority.generation.to_string()),
                ];
                ca_expiry.push((labels.clone(), authority.not_after.unix_timestamp() as f64));
                if let Some(crl) = self.published.crl(authority.id) {
                    crl_age.push((labels.clone(), (now - crl.record.this_update).as_seconds_f64()));
                    crl_next.push((labels.clone(), crl.record.next_update.unix_timestamp() as f64));
                    crl_number.push((labels, crl.record.number as f64));
                }
            }
        }
        render_gauges(
            &mut out,
            "kca_crl_age_seconds",
            "Seconds since the current CRL's thisUpdate.",
            &crl_age,
        );
        render_gauges(
            &mut out,
            "kca_crl_next_update_timestamp_seconds",
            "nextUpdate of the current CRL.",
            &crl_next,
        );
        render_gauges(&mut out, "kca_crl_number", "CRL Number of the current CRL.", &crl_number);
        render_gauges(
            &mut out,
            "kca_authority_not_after_timestamp_seconds",
            "Expiry of each live CA generation.",
            &ca_expiry,
        );
        let known = crate::profiles::profiles();
        let names: std::collections::HashMap<uuid::Uuid, String> =
            self.published.snapshots().iter().map(|s| (s.cluster.id, s.cluster.name.clone())).collect();
        let mut leaf_expiry = Vec::new();
        for (cluster_id, profile, earliest) in expiries {
            let Some(cluster) = names.get(cluster_id) else {
                continue;
            };
            let Some(profile) = known.iter().map(|p| p.name).chain(["user"]).find(|name| name == profile)
            else {
                continue;
            };
            leaf_expiry.push((
                vec![("cluster", cluster.clone()), ("profile", profile.to_string())],
                earliest.unix_timestamp() as f64,
            ));
        }
        leaf_expiry.sort_by(|a, b| a.0.cmp(&b.0));
        render_gauges(
            &mut out,
            "kca_certificate_earliest_expiry_timestamp_seconds",
            "Earliest notAfter of the unexpired, unrevoked certificates, by cluster and profile.",
            &leaf_expiry,
        );
        let pool = self.store.pool_state();
        render_gauges(
            &mut out,
            "kca_db_pool_connections",
            "Database pool connections, by state.",
            &[
                (vec![("state", "idle".to_string())], f64::from(pool.idle)),
                (vec![("state", "in_use".to_string())], f64::from(pool.size.saturating_sub(pool.idle))),
            ],
        );
        render_gauges(
            &mut out,
            "kca_db_pool_max_connections",
            "Largest database pool.",
            &[(vec![], f64::from(pool.max))],
        );
        render_gauges(
            &mut out,
            "kca_build_info",
            "Version and storage backend of this kca.",
            &[(
                vec![
                    ("version", env!("CARGO_PKG_VERSION").to_string()),
                    ("backend", self.store.backend().to_string()),
                ],
                1.0,
            )],
        );
        out
    }

    /// The claims of a bearer token that is genuine, current, registered and not revoked.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Claims>, TokenError> {
        let now = OffsetDateTime::now_utc();
        let claims = match self.tokens.verify(token, now) {
            Err(TokenError::UnknownKey) => {
                // Another replica may have rotated the signing key: learn it, then try once more.
                self.tokens.reload_keys(self.store.as_ref(), self.keyring.master()).await?;
                self.tokens.verify(token, now)
            }
            other => other,
        }?;
        let registered = match self.tokens.registration(&claims) {
            Some(registered) => registered,
            None => {
                let id = uuid::Uuid::parse_str(&claims.jti)
                    .map_err(|_| TokenError::Invalid("malformed token id (jti)".into()))?;
                match self.store.get_token(id).await {
                    Ok(record) => {
                        self.tokens.remember(&record);
                        record.revoked_at.is_none()
                    }
                    Err(StoreError::NotFound) => {
                        return Err(TokenError::Invalid("not issued by this kca (unknown token id)".into()));
                    }
                    Err(other) => return Err(other.into()),
                }
            }
        };
        if !registered {
            return Err(TokenError::Invalid("revoked".into()));
        }
        self.tokens.used(&claims, now);
        Ok(claims)
    }

    /// Mint a token and register it (with its audit event); answers the token and its record.
    pub async fn mint_token(
        &self,
        request: &TokenRequest,
        created_by: &str,
        audit: impl FnOnce(&TokenRecord) -> crate::store::AuditEntry,
    ) -> Result<(String, TokenRecord), TokenError> {
        let (token, record) = self.tokens.mint(request, created_by, self.now())?;
        self.store.insert_token(&record, &audit(&record)).await?;
        self.tokens.remember(&record);
        Ok((token, record))
    }

    /// Refuse an issuance when the caller's token has used up its rate: `Err(seconds to wait)`.
    pub fn check_issue_rate(&self, token_id: &str) -> Result<(), u64> {
        self.issue_limiter.check(token_id, std::time::Instant::now())
    }

    /// Publish a CRL of `authority` that reflects every revocation committed before this call
    /// (coalesced with concurrent requests for the same authority), reading only the revocations
    /// made since this process's previous publication of it.
    pub async fn publish_crl(&self, authority: &AuthorityRecord) -> Result<Arc<CachedCrl>, PublishError> {
        self.publish_crl_reading(authority, false).await
    }

    /// Re-sign a CRL of `authority` from its whole revoked set read afresh (the scheduled
    /// re-signing).
    pub async fn resign_crl(&self, authority: &AuthorityRecord) -> Result<Arc<CachedCrl>, PublishError> {
        self.publish_crl_reading(authority, true).await
    }

    async fn publish_crl_reading(
        &self,
        authority: &AuthorityRecord,
        reread: bool,
    ) -> Result<Arc<CachedCrl>, PublishError> {
        self.crl_publisher
            .coalesce(
                authority.id,
                reread,
                || self.published.crl(authority.id),
                async |known: &mut crate::store::RevokedSet| {
                    let ca = self.keyring.signer(authority)?;
                    let validity = self.settings.crl_validity;
                    let now = self.now();
                    let record = self
                        .store
                        .publish_crl(
                            authority.id,
                            now - validity,
                            crl_number_floor(now),
                            known,
                            &|number, entries| sign_crl_now(&ca, number, entries, now, validity),
                        )
                        .await?;
                    tracing::info!(
                        authority.id = %authority.id,
                        authority.kind = %authority.kind,
                        crl.number = record.number,
                        crl.entries = record.entries,
                        "CRL published"
                    );
                    self.metrics.crl_published();
                    Ok(self.published.put_crl(record))
                },
            )
            .await
    }

    /// Re-read a cluster (by id or name) with its authorities and CRLs, and publish them. The read
    /// ticket is taken first, so whichever of two racing refreshes saw the later state wins.
    pub async fn refresh_snapshot(&self, id_or_name: &str) -> Result<Arc<ClusterSnapshot>, StoreError> {
        let ticket = self.published.ticket();
        let cluster = self.store.find_cluster(id_or_name).await?;
        let authorities = self.store.list_authorities(cluster.id).await?;
        let live: Vec<uuid::Uuid> = authorities
            .iter()
            .filter(|a| a.state != crate::store::AuthorityState::Retired)
            .map(|a| a.id)
            .collect();
        for crl in self.store.current_crls(&live).await? {
            self.published.put_crl(crl);
        }
        Ok(self.published.put_cluster(ticket, ClusterSnapshot { cluster, authorities }))
    }

    /// The published snapshot of a cluster: from memory, else from the database.
    pub async fn snapshot(&self, id_or_name: &str) -> Result<Arc<ClusterSnapshot>, StoreError> {
        if let Some(snapshot) = self.published.cluster(id_or_name) {
            return Ok(snapshot);
        }
        self.refresh_snapshot(id_or_name).await
    }
}
