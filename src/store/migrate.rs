//! Migrations embedded in the binary, one folder per backend with the same numbering.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use std::future::Future;
use std::pin::Pin;

/// `(version, description, sql)`, in order.
pub(crate) type EmbeddedMigration = (i64, &'static str, &'static str);

#[derive(Debug)]
struct Embedded(&'static [EmbeddedMigration]);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        sql.into_sql_str(),
                        false,
                    )
                })
                .collect())
        })
    }
}

pub(crate) async fn migrator(
    migrations: &'static [EmbeddedMigration],
) -> Result<Migrator, sqlx::migrate::MigrateError> {
    Migrator::new(Embedded(migrations)).await
}
