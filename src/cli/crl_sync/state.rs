//! The state file, `<crl-out>.state.json`: the last accepted CRL Number per CA (by SKI), and the
//! ETag and SHA-256 of each document last synced, so a restart neither refetches needlessly nor
//! accepts an older CRL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::args::CrlSyncArgs;
use super::{Document, Documents};
use crate::cli::output::write_public_file;
use crate::pki::crl_check::CheckedCrl;

/// What was last synced of one document: the server's ETag and the bytes written.
#[derive(Clone, Debug)]
pub struct Synced {
    pub etag: Option<String>,
    pub body: Vec<u8>,
}

/// The state of the syncer, as loaded from and saved to the state file.
#[derive(Debug)]
pub struct State {
    path: PathBuf,
    /// Server, cluster and kinds the documents come from.
    source: String,
    /// The last accepted CRL Number per CA, keyed by the CA's SKI (hex).
    pub crl_numbers: BTreeMap<String, u64>,
    /// What was last synced of each document, when known and still on disk as written.
    pub synced: Documents<Option<Synced>>,
}

/// The file's format.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    #[serde(default)]
    crl_numbers: BTreeMap<String, u64>,
    /// ETags of another source are not reused.
    #[serde(default)]
    source: Option<String>,
    /// By endpoint name.
    #[serde(default)]
    documents: BTreeMap<String, DocumentState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DocumentState {
    etag: Option<String>,
    /// Of the file written.
    sha256: String,
}

/// `<file>.state.json` beside `file`.
fn state_path(crl_out: &Path) -> PathBuf {
    let mut name = crl_out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".state.json");
    crl_out.with_file_name(name)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

impl State {
    /// Read the state file beside `--crl-out` (none yet: an empty state). A file that does not
    /// parse is an error, not replaced silently: it holds the CRL Numbers that must not go back.
    pub fn load(args: &CrlSyncArgs, source: String) -> anyhow::Result<Self> {
        let path = state_path(&args.crl_out);
        let file: StateFile = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is not a crl-sync state file; it keeps the last accepted CRL Numbers, so it is \
                     not replaced silently: fix or remove it",
                    path.display()
                )
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => StateFile::default(),
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        let same_source = file.source.as_deref() == Some(source.as_str());
        let synced = Documents::from_fn(|document| {
            let recorded = file.documents.get(document.endpoint()).filter(|_| same_source)?;
            // Reuse the ETag only while the file is exactly what was written.
            let body = std::fs::read(args.out_path(document)?).ok()?;
            (sha256_hex(&body) == recorded.sha256).then(|| Synced { etag: recorded.etag.clone(), body })
        });
        Ok(Self { path, source, crl_numbers: file.crl_numbers, synced })
    }

    /// Remember the CRL Numbers of CRLs that passed the checks; they never go back.
    pub fn accept(&mut self, checked: &[CheckedCrl]) {
        for crl in checked {
            let last = self.crl_numbers.entry(crl.key_id.clone()).or_insert(0);
            *last = (*last).max(crl.number);
        }
    }

    /// Remember what a pass synced: `bodies` and their `etags`. When applying failed, the changed
    /// documents are forgotten, so the next pass fetches and pushes them again.
    pub fn record(
        &mut self,
        mut bodies: Documents<Option<Vec<u8>>>,
        mut etags: Documents<Option<String>>,
        changed: &Documents<bool>,
        applied: bool,
    ) {
        self.synced = Documents::from_fn(|document| {
            if !applied && *changed.get(document) {
                return None;
            }
            let body = bodies.get_mut(document).take()?;
            Some(Synced { etag: etags.get_mut(document).take(), body })
        });
    }

    /// Write the state file, when it differs from what is there.
    pub fn save(&self) -> anyhow::Result<()> {
        let documents = Document::ALL
            .into_iter()
            .filter_map(|document| {
                let synced = self.synced.get(document).as_ref()?;
                let recorded = DocumentState { etag: synced.etag.clone(), sha256: sha256_hex(&synced.body) };
                Some((document.endpoint().to_string(), recorded))
            })
            .collect();
        let file =
            StateFile { crl_numbers: self.crl_numbers.clone(), source: Some(self.source.clone()), documents };
        let mut text = serde_json::to_vec_pretty(&file)?;
        text.push(b'\n');
        if std::fs::read(&self.path).is_ok_and(|current| current == text) {
            return Ok(());
        }
        write_public_file(&self.path, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_sits_beside_the_crl_file() {
        assert_eq!(
            state_path(Path::new("/etc/haproxy/client-crl.pem")),
            Path::new("/etc/haproxy/client-crl.pem.state.json")
        );
    }
}
