//! The exec-credential cache, so that kubectl, which runs the plugin on every call, does not mint a
//! certificate per call.
//!
//! One JSON file per (kca URL, cluster, user, sorted groups), named by the SHA-256 of that tuple,
//! mode 0600 in a 0700 directory: `$KCA_CACHE_DIR`, else `$XDG_CACHE_HOME/kca`, else
//! `~/.cache/kca`. A credential is reused while more than max(60 s, 10 % of its lifetime) remains
//! and its serial is not on the cluster's published revoked list (`revoked.map`, kept here for
//! [`REVOKED_LIST_MAX_AGE`] and then asked for again with `If-None-Match`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::output::write_private_file;
use crate::pki::kubeconfig::ExecCredential;

/// A cached credential and the validity of its certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedCredential {
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub credential: ExecCredential,
}

impl CachedCredential {
    /// Whether it is still worth handing out at `now`: more than max(60 s, 10 % of the lifetime)
    /// remains.
    pub fn is_fresh(&self, now: OffsetDateTime) -> bool {
        let lifetime = self.not_after - self.not_before;
        let margin = (lifetime / 10_i32).max(time::Duration::seconds(60));
        self.not_after - now > margin
    }
}

/// The cache key of a credential: which server, cluster, user and groups (in any order).
pub fn cache_key(server_url: &str, cluster: &str, user: &str, groups: &[String]) -> String {
    let mut sorted: Vec<&str> = groups.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let material = serde_json::to_vec(&(server_url.trim_end_matches('/'), cluster, user, sorted))
        .expect("strings always serialize");
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &material))
}

/// The cache directory, from the environment.
pub fn default_dir() -> anyhow::Result<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("KCA_CACHE_DIR") {
        return Ok(dir);
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return Ok(dir.join("kca"));
    }
    match var("HOME") {
        Some(home) => Ok(home.join(".cache").join("kca")),
        None => bail!("no cache directory: set KCA_CACHE_DIR, XDG_CACHE_HOME or HOME"),
    }
}

pub struct CredentialCache {
    dir: PathBuf,
}

impl CredentialCache {
    /// Open (creating it 0700 if missing) a cache directory; refuse one others can read.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the credential cache {}", dir.display()))?;
        let meta = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if !meta.is_dir() {
            bail!("the credential cache {} is not a directory", dir.display());
        }
        if mode & 0o077 != 0 {
            bail!(
                "the credential cache {} is open to other users (mode {mode:o}): chmod 700 it, or set \
                 KCA_CACHE_DIR to a private directory",
                dir.display()
            );
        }
        Ok(Self { dir: dir.to_path_buf() })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("exec-credential-{key}.json"))
    }

    /// The cached credential under `key` if it is still fresh at `now`; anything unreadable counts
    /// as absent.
    pub fn load(&self, key: &str, now: OffsetDateTime) -> Option<CachedCredential> {
        let text = std::fs::read(self.path(key)).ok()?;
        let cached: CachedCredential = serde_json::from_slice(&text).ok()?;
        cached.is_fresh(now).then_some(cached)
    }

    pub fn store(&self, key: &str, cached: &CachedCredential) -> anyhow::Result<()> {
        let body = serde_json::to_vec(cached).expect("a credential always serializes");
        write_private_file(&self.path(key), &body)
    }

    /// Forget a credential (revoked): the next call issues a new one.
    pub fn remove(&self, key: &str) {
        let _ = std::fs::remove_file(self.path(key));
    }

    fn revoked_path(&self, list_key: &str) -> PathBuf {
        self.dir.join(format!("revoked-{list_key}.json"))
    }

    /// The copy of a cluster's revoked list kept here, fresh or not.
    pub fn load_revoked(&self, list_key: &str) -> Option<RevokedList> {
        serde_json::from_slice(&std::fs::read(self.revoked_path(list_key)).ok()?).ok()
    }

    pub fn store_revoked(&self, list_key: &str, list: &RevokedList) -> anyhow::Result<()> {
        let body = serde_json::to_vec(list).expect("a list always serializes");
        write_private_file(&self.revoked_path(list_key), &body)
    }
}

/// How long a copy of the revoked list is trusted before it is asked for again (conditionally:
/// an unchanged list costs a `304`).
pub const REVOKED_LIST_MAX_AGE: time::Duration = time::Duration::seconds(15);

/// A cluster's published revoked serials (`revoked.map`), as last fetched.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokedList {
    #[serde(with = "time::serde::rfc3339")]
    pub fetched_at: OffsetDateTime,
    pub etag: Option<String>,
    /// Uppercase hex, without leading zero octets.
    pub serials: Vec<String>,
}

impl RevokedList {
    /// The serials of an HAProxy map (`<SERIAL HEX> <reason>` a line).
    pub fn from_map(map: &str, etag: Option<String>, now: OffsetDateTime) -> Self {
        let serials =
            map.lines().filter_map(|line| line.split_whitespace().next()).map(normal_serial).collect();
        Self { fetched_at: now, etag, serials }
    }

    pub fn is_fresh(&self, now: OffsetDateTime) -> bool {
        now - self.fetched_at < REVOKED_LIST_MAX_AGE && self.fetched_at <= now
    }

    pub fn contains(&self, serial: &str) -> bool {
        let serial = normal_serial(serial);
        self.serials.contains(&serial)
    }
}

/// A hex serial compared the same way whatever its case and leading zero octets.
fn normal_serial(serial: &str) -> String {
    let upper = serial.trim().to_ascii_uppercase();
    let mut rest = upper.as_str();
    while rest.len() > 2 && rest.starts_with("00") {
        rest = &rest[2..];
    }
    rest.to_string()
}

/// The key of a cluster's revoked list: which server, which cluster.
pub fn revoked_list_key(server_url: &str, cluster: &str) -> String {
    let material =
        serde_json::to_vec(&(server_url.trim_end_matches('/'), cluster)).expect("strings serialize");
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &material))
}

/// The serial (uppercase hex) of the certificate in a PEM document.
pub fn serial_of(certificate_pem: &str) -> Option<String> {
    use der::Decode;
    let block = pem::parse(certificate_pem).ok()?;
    let certificate = x509_cert::Certificate::from_der(block.contents()).ok()?;
    Some(normal_serial(&hex::encode_upper(certificate.tbs_certificate.serial_number.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn cached(not_before: OffsetDateTime, not_after: OffsetDateTime) -> CachedCredential {
        CachedCredential {
            not_before,
            not_after,
            credential: ExecCredential::new("CERT", "KEY", "2030-01-01T00:00:00Z".into()),
        }
    }

    #[test]
    fn a_credential_is_reused_until_the_last_tenth_of_its_life() {
        // 10 h: renewed in the last hour.
        let c = cached(datetime!(2030-01-01 00:00 UTC), datetime!(2030-01-01 10:00 UTC));
        assert!(c.is_fresh(datetime!(2030-01-01 08:59 UTC)));
        assert!(!c.is_fresh(datetime!(2030-01-01 09:00 UTC)));
        // 5 min: the 60-second floor applies.
        let c = cached(datetime!(2030-01-01 00:00 UTC), datetime!(2030-01-01 00:05 UTC));
        assert!(c.is_fresh(datetime!(2030-01-01 00:03:59 UTC)));
        assert!(!c.is_fresh(datetime!(2030-01-01 00:04 UTC)));
        assert!(!c.is_fresh(datetime!(2030-01-01 01:00 UTC)));
    }

    #[test]
    fn the_revoked_list_matches_serials_whatever_their_spelling_and_ages_quickly() {
        let now = datetime!(2030-01-01 00:00 UTC);
        let list = RevokedList::from_map("00AB12 keyCompromise\n7f01 superseded\n", None, now);
        assert!(list.contains("ab12") && list.contains("7F01") && list.contains("00007F01"));
        assert!(!list.contains("AB1") && !list.contains("12"));
        assert!(list.is_fresh(now + time::Duration::seconds(14)));
        assert!(!list.is_fresh(now + time::Duration::seconds(15)));
        assert!(!list.is_fresh(now - time::Duration::seconds(1)), "a clock set back does not pin it");
        assert!(RevokedList::from_map("", None, now).serials.is_empty());
    }

    #[test]
    fn the_key_ignores_group_order_and_nothing_else() {
        let groups = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let key = cache_key("https://kca:8443", "prod", "alice", &groups(&["dev", "ops"]));
        assert_eq!(key, cache_key("https://kca:8443/", "prod", "alice", &groups(&["ops", "dev"])));
        assert_ne!(key, cache_key("https://kca:8443", "prod", "alice", &groups(&["dev"])));
        assert_ne!(key, cache_key("https://kca:8443", "prod", "bob", &groups(&["dev", "ops"])));
        assert_ne!(key, cache_key("https://kca:8443", "staging", "alice", &groups(&["dev", "ops"])));
        assert_ne!(key, cache_key("https://other:8443", "prod", "alice", &groups(&["dev", "ops"])));
        assert_eq!(key.len(), 64);
    }

    #[test]
    fn the_cache_round_trips_and_refuses_an_open_directory() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("kca");
        let cache = CredentialCache::open(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let now = OffsetDateTime::now_utc();
        let entry = cached(now - time::Duration::minutes(5), now + time::Duration::hours(1));
        assert!(cache.load("k", now).is_none());
        cache.store("k", &entry).unwrap();
        assert_eq!(cache.load("k", now).unwrap().credential.status.client_key_data, "KEY");
        assert!(cache.load("k", now + time::Duration::hours(1)).is_none());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(CredentialCache::open(&dir).is_err());
    }
}
