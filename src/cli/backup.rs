//! `kca backup` and `kca restore`, on the server host (same database and master key settings as
//! `serve`): a consistent, integrity-checked archive of a running server's database, and its
//! restoration into an empty database of either backend.

use std::path::PathBuf;
use std::time::Duration;

use crate::backup::{self, Header};
use crate::config::{StoreArgs, parse_duration};
use crate::keyring::write_private_file;
use crate::pki::crl::crl_number_floor;
use crate::store::{AuthorityState, MASTER_KEY_CHECK, MASTER_KEY_CHECK_PREVIOUS};

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// The database to back up (the master key is not needed: keys stay sealed).
    #[command(flatten)]
    pub store: StoreArgs,
    /// Where to write the archive (created, mode 0600; never overwritten).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The empty database to restore into, and the master key the backup's keys are sealed under.
    #[command(flatten)]
    pub store: StoreArgs,
    /// The archive `kca backup` wrote.
    #[arg(long)]
    pub from: PathBuf,
    /// Lifetime of the CRLs signed again after the restore (as `serve --crl-validity`).
    #[arg(long, env = "KCA_CRL_VALIDITY", default_value = "7d", value_parser = parse_duration)]
    pub crl_validity: Duration,
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let store = crate::store::connect(&args.store.database_url().map_err(anyhow::Error::msg)?, 2).await?;
    let rows = store.backup_rows().await?;
    let header = Header {
        created_at: time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?,
        backend: store.backend().to_string(),
        rows: rows.len() as u64,
    };
    let archive = backup::write(&header, &rows);
    write_private_file(&args.out, &archive)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", args.out.display()))?;
    let count = |table: &str| rows.iter().filter(|(t, _)| t == table).count();
    eprintln!(
        "kca: backed up {} rows ({} clusters, {} certificates, {} audit events, {} tokens) from {} to {}",
        rows.len(),
        count("clusters"),
        count("certificates"),
        count("audit_events"),
        count("api_tokens"),
        header.backend,
        args.out.display()
    );
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let archive =
        std::fs::read(&args.from).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.from.display()))?;
    let (header, rows) = backup::read(&archive)?;
    // The master key must open the backup's keys before anything is written.
    let (master, _) = crate::keyring::load_master_key(&args.store)?;
    let check = |key: &str| {
        rows.iter()
            .find(|(table, row)| table == "settings" && row.get("key").and_then(|k| k.as_str()) == Some(key))
            .and_then(|(_, row)| row.get("value")?.as_str().map(str::to_string))
    };
    let opens =
        [MASTER_KEY_CHECK, MASTER_KEY_CHECK_PREVIOUS].iter().filter_map(|key| check(key)).any(|value| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(value)
                .is_ok_and(|sealed| master.open(&sealed, MASTER_KEY_CHECK.as_bytes()).is_ok())
        });
    if !opens {
        anyhow::bail!(
            "the master key does not open the keys in this backup: set KCA_MASTER_KEY or \
             KCA_MASTER_KEY_FILE (and KCA_MASTER_KEY_VERSION) to the key of the server it was taken from"
        );
    }
    // CAs whose keys are in a PKCS#11 token sign their new CRLs there: the token must be configured.
    let in_token = rows.iter().any(|(table, row)| {
        table == "authorities" && row.get("key_storage").and_then(|v| v.as_str()) == Some("pkcs11")
    });
    if in_token && args.store.pkcs11.config().is_none() {
        anyhow::bail!(
            "the backup holds CAs whose keys are in a PKCS#11 token: set KCA_PKCS11_MODULE, \
             KCA_PKCS11_TOKEN_LABEL and KCA_PKCS11_PIN_FILE to that token"
        );
    }
    std::fs::create_dir_all(&args.store.data_dir)?;
    {
        let _setup = crate::app::lock_data_dir(&args.store.data_dir).await?;
        let url = args.store.database_url().map_err(anyhow::Error::msg)?;
        let store = crate::store::connect(&url, 2).await?;
        store.migrate().await?;
        store.restore_rows(&rows).await?;
    }
    // Every live CA signs a CRL at once, numbered after the clock: above every number the old
    // server published, after the backup too.
    let (store, keyring, _) = crate::app::open_store_and_keys(&args.store).await?;
    let now = time::OffsetDateTime::now_utc();
    let validity = args.crl_validity;
    let mut published = 0;
    for authority in store.list_live_authorities().await? {
        debug_assert_ne!(authority.state, AuthorityState::Retired);
        let signer = keyring.signer(&authority)?;
        store
            .publish_crl(
                authority.id,
                now - validity,
                crl_number_floor(now),
                &mut crate::store::RevokedSet::default(),
                &|number, entries| crate::clusters::sign_crl_now(&signer, number, entries, now, validity),
            )
            .await?;
        published += 1;
    }
    eprintln!(
        "kca: restored {} rows of a {} backup taken at {} into the {} database; signed {published} CRLs",
        rows.len(),
        header.backend,
        header.created_at,
        store.backend()
    );
    Ok(())
}
