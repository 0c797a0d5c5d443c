//! `kca keys`: master-key custody on the server host (same database and master key settings as
//! `serve`): seal every key again under a new master key, then drop the old copies.

use std::path::PathBuf;

use crate::config::StoreArgs;
use crate::keyring::{self, read_master_key_file};
use crate::store::AuditEntry;

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Seal every CA and token signing key again under a new master key version. Servers keep
    /// serving: the copies under the current master key stay until `kca keys drop-previous`, so
    /// replicas accept both until they restart with the new key. Run it again (still with the
    /// current master key) to seal what replicas added meanwhile.
    Rewrap(RewrapArgs),
    /// Once every replica runs with the new master key: check it opens every key, then delete
    /// the copies sealed under the previous one.
    DropPrevious(StoreArgs),
}

#[derive(Debug, clap::Args)]
pub struct RewrapArgs {
    /// The current master key and database, as `serve` has them.
    #[command(flatten)]
    pub store: StoreArgs,
    /// File holding the new 32-byte master key (raw or base64).
    #[arg(long)]
    pub new_master_key_file: PathBuf,
    /// Version number of the new master key (stored beside every key it seals).
    #[arg(long)]
    pub new_master_key_version: i32,
}

pub async fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Rewrap(args) => rewrap(args).await,
        KeysCommand::DropPrevious(args) => drop_previous(args).await,
    }
}

async fn rewrap(args: RewrapArgs) -> anyhow::Result<()> {
    let new = read_master_key_file(
        &args.new_master_key_file,
        args.new_master_key_version,
        "--new-master-key-file",
    )?;
    let (store, keyring, _) = crate::app::open_store_and_keys(&args.store).await?;
    let current = keyring.master();
    if current.version() == new.version() {
        anyhow::bail!(
            "the new master key version must differ from the current one ({}): choose another \
             --new-master-key-version",
            current.version()
        );
    }
    let audit = host_audit("keys.rewrap", new.version(), current.version());
    let counts = keyring::rewrap(store.as_ref(), current, &new, &audit).await?;
    eprintln!(
        "kca: sealed under master key version {}: {} CA keys, {} token signing keys{}; restart every \
         server with the new master key, then run `kca keys drop-previous`",
        new.version(),
        counts.authorities,
        counts.token_keys,
        if counts.master_key_check > 0 { ", the master key check" } else { "" },
    );
    Ok(())
}

async fn drop_previous(args: StoreArgs) -> anyhow::Result<()> {
    let (store, keyring, _) = crate::app::open_store_and_keys(&args).await?;
    let version = keyring.master().version();
    let audit = host_audit("keys.drop_previous", version, version);
    let counts = keyring::drop_previous(store.as_ref(), keyring.master(), &audit).await?;
    eprintln!(
        "kca: every key opens with master key version {version}; dropped the previous copies of {} CA \
         keys and {} token signing keys",
        counts.authorities, counts.token_keys
    );
    Ok(())
}

/// An audit entry of the operator on this host, as `kca token create` records it.
fn host_audit(action: &str, version: i32, from_version: i32) -> AuditEntry {
    AuditEntry {
        at: time::OffsetDateTime::now_utc(),
        actor: super::host_operator(),
        action: action.into(),
        object_type: "master_key".into(),
        object_id: version.to_string(),
        cluster_id: None,
        remote_addr: None,
        details: serde_json::json!({"master_key_version": version, "from_version": from_version}),
    }
}
