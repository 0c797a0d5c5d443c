//! The backup archive: every row of the database, read in one consistent snapshot, in a
//! backend-neutral text form that restores into SQLite or Postgres, ending with the SHA-256 of
//! everything before it. Keys are in it only as sealed (a backup is as safe as a database dump,
//! and useless without the master key); it is written readable by its owner only.
//!
//! ```text
//! kca-backup 1
//! {"created_at":"2026-…","backend":"postgres","rows":1234}
//! {"table":"settings","row":{"key":"master_key_check","value":"<base64>",…}}
//! …
//! sha256 <64 hex digits over every byte above this line>
//! ```

use aws_lc_rs::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};

use crate::store::BackupRow;

const MAGIC: &str = "kca-backup 1\n";
const TRAILER: &str = "sha256 ";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a kca backup (it does not start with {:?})", MAGIC.trim_end())]
    NotABackup,
    #[error("the backup is damaged: {0}")]
    Damaged(String),
}

/// What the archive says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub created_at: String,
    /// The backend it was taken from.
    pub backend: String,
    pub rows: u64,
}

#[derive(Serialize, Deserialize)]
struct Line {
    table: String,
    row: serde_json::Map<String, serde_json::Value>,
}

/// The archive of `rows`.
pub fn write(header: &Header, rows: &[BackupRow]) -> Vec<u8> {
    let mut out = MAGIC.as_bytes().to_vec();
    out.extend(serde_json::to_vec(header).expect("a header serialises"));
    out.push(b'\n');
    for (table, row) in rows {
        let line = Line { table: table.clone(), row: row.clone() };
        out.extend(serde_json::to_vec(&line).expect("a row serialises"));
        out.push(b'\n');
    }
    let sum = hex::encode(digest(&SHA256, &out));
    out.extend(format!("{TRAILER}{sum}\n").as_bytes());
    out
}

/// Check an archive's checksum and row count, then answer its header and rows; nothing is
/// answered from an archive that does not check.
pub fn read(archive: &[u8]) -> Result<(Header, Vec<BackupRow>), BackupError> {
    if !archive.starts_with(MAGIC.as_bytes()) {
        return Err(BackupError::NotABackup);
    }
    let body_end = archive[..archive.len().saturating_sub(1)]
        .iter()
        .rposition(|b| *b == b'\n')
        .map(|i| i + 1)
        .ok_or_else(|| BackupError::Damaged("no checksum line".into()))?;
    let (body, trailer) = archive.split_at(body_end);
    let trailer = std::str::from_utf8(trailer).map_err(|_| BackupError::Damaged("checksum line".into()))?;
    let expected = trailer
        .strip_prefix(TRAILER)
        .map(str::trim_end)
        .ok_or_else(|| BackupError::Damaged("it is truncated (no checksum line at the end)".into()))?;
    if hex::encode(digest(&SHA256, body)) != expected {
        return Err(BackupError::Damaged("its SHA-256 does not match its content".into()));
    }
    let mut lines = body[MAGIC.len()..].split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let header: Header = serde_json::from_slice(lines.next().unwrap_or_default())
        .map_err(|e| BackupError::Damaged(format!("header: {e}")))?;
    let rows = lines
        .map(|line| {
            serde_json::from_slice::<Line>(line)
                .map(|line| (line.table, line.row))
                .map_err(|e| BackupError::Damaged(format!("row: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if rows.len() as u64 != header.rows {
        return Err(BackupError::Damaged(format!(
            "{} rows where the header says {}",
            rows.len(),
            header.rows
        )));
    }
    Ok((header, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Header, Vec<BackupRow>) {
        let row = serde_json::json!({"key": "k", "value": "AAE="}).as_object().unwrap().clone();
        let header = Header { created_at: "now".into(), backend: "sqlite".into(), rows: 2 };
        (header, vec![("settings".into(), row.clone()), ("settings".into(), row)])
    }

    #[test]
    fn an_archive_reads_back_as_written() {
        let (header, rows) = sample();
        assert_eq!(read(&write(&header, &rows)).unwrap(), (header, rows));
    }

    #[test]
    fn a_changed_truncated_or_foreign_archive_is_refused() {
        let (header, rows) = sample();
        let archive = write(&header, &rows);
        let mut flipped = archive.clone();
        let at = archive.len() / 2;
        flipped[at] ^= 1;
        assert!(matches!(read(&flipped), Err(BackupError::Damaged(_))));
        assert!(matches!(read(&archive[..archive.len() - 30]), Err(BackupError::Damaged(_))));
        let without_trailer = &archive[..archive.len() - 72];
        assert!(matches!(read(without_trailer), Err(BackupError::Damaged(_))));
        assert!(matches!(read(b"PGDMP"), Err(BackupError::NotABackup)));
        // A row dropped and the checksum recomputed: the header's count tells.
        let short = write(&header, &rows[..1]);
        assert!(matches!(read(&short), Err(BackupError::Damaged(e)) if e.contains("rows")));
    }
}
