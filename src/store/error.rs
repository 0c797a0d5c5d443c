//! Storage errors, classified the way the HTTP edge answers them.

use crate::pki::PkiError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot be reached now; retrying later may work (answered 503).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The caller asked for something the store cannot do (a bug in kca, answered 500).
    #[error("invalid request to the store: {0}")]
    Invalid(String),
    #[error("invalid database configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// A sealed value a rewrap or its check could not open (named, never shown).
    #[error("the key of {owner}: {source}")]
    Sealed {
        owner: String,
        #[source]
        source: PkiError,
    },
}

impl StoreError {
    /// Classify a driver error: unique violations are conflicts, lost connections are outages.
    pub(crate) fn from_sqlx(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => StoreError::Unavailable(err),
            sqlx::Error::Database(db) => {
                if db.is_unique_violation() {
                    return StoreError::Conflict(db.constraint().unwrap_or("unique").to_string());
                }
                // Postgres: connection exceptions (08), shutdown / cannot connect now (57P0x).
                let code = db.code().map(|c| c.to_string()).unwrap_or_default();
                if code.starts_with("08") || code.starts_with("57P0") {
                    StoreError::Unavailable(err)
                } else {
                    StoreError::Database(err)
                }
            }
            _ => StoreError::Database(err),
        }
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::from_sqlx(err)
    }
}
