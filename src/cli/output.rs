//! What client commands print: human tables and fields by default, JSON with `-o json`; and files
//! written privately (mode 0600, atomically).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// `-o/--output` of the commands that return records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables and `key: value` lines.
    #[default]
    Text,
    /// The server's JSON, pretty-printed (lists as one array of every page's items).
    Json,
}

#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct FormatArg {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Where a command that returns a document (`kubeconfig`, `authority-cert`) writes it, and in
/// which format: `-o/--output` is the format, `--file` the file. Until the next release, `-o`
/// with a value that names no format is still read as the file it used to mean, with a warning.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DocumentOutput {
    /// Output format (see the command's help for the formats it knows).
    #[arg(short = 'o', long = "output", value_name = "FORMAT")]
    pub output: Option<String>,
    /// Write to FILE instead of stdout (replaced atomically).
    #[arg(long = "file", value_name = "FILE", conflicts_with = "output_file")]
    pub file: Option<PathBuf>,
    /// The old spelling of --file, accepted with a warning for one release.
    #[arg(long = "output-file", value_name = "FILE", hide = true)]
    pub output_file: Option<PathBuf>,
}

impl DocumentOutput {
    /// The format (one of `formats`, the first by default) and the file, if any. The old
    /// spellings (`-o FILE`, `--output-file FILE`) warn on stderr.
    pub fn resolve(&self, formats: &[&'static str]) -> anyhow::Result<(&'static str, Option<PathBuf>)> {
        let warn = |old: &str| {
            eprintln!(
                "kca: warning: {old} FILE is deprecated and will be removed in the next release: use \
                 --file FILE (-o/--output names the output format: {})",
                formats.join(", ")
            );
        };
        let mut file = self.file.clone();
        if let Some(path) = &self.output_file {
            warn("--output-file");
            file = Some(path.clone());
        }
        let format = match &self.output {
            None => formats[0],
            Some(value) => match formats.iter().find(|f| f.eq_ignore_ascii_case(value)) {
                Some(format) => format,
                None => {
                    if file.is_some() {
                        anyhow::bail!(
                            "unknown output format {value:?}; valid: {} (files go to --file)",
                            formats.join(", ")
                        );
                    }
                    warn("-o");
                    file = Some(PathBuf::from(value));
                    formats[0]
                }
            },
        };
        Ok((format, file))
    }
}

pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// A table: a header row, then rows, columns padded to their widest cell.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                out.extend(std::iter::repeat_n(' ', widths[i] - cell.chars().count() + 3));
            }
        }
        out.push('\n');
    }
    out
}

/// `key: value` lines, keys aligned.
pub fn render_fields(fields: &[(&str, String)]) -> String {
    let width = fields.iter().map(|(k, _)| k.chars().count() + 1).max().unwrap_or(0);
    fields.iter().map(|(key, value)| format!("{:width$}  {value}\n", format!("{key}:"))).collect()
}

/// A JSON value as one short text cell.
pub fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) if items.is_empty() => "-".into(),
        serde_json::Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        serde_json::Value::Object(map) if map.is_empty() => "-".into(),
        serde_json::Value::Object(map) => {
            map.iter().map(|(k, v)| format!("{k}={}", cell(v))).collect::<Vec<_>>().join(",")
        }
        other => other.to_string(),
    }
}

/// Write `content` to `path` with mode 0600: into a new file beside it, then renamed over it, so
/// a reader sees the old file or the new one and never a part; the parent is created (0700) if
/// missing.
pub fn write_private_file(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    write_atomically(path, content, 0o600)
}

/// As [`write_private_file`], for public documents (CA certificates): mode 0644.
pub fn write_public_file(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    write_atomically(path, content, 0o644)
}

fn write_atomically(path: &Path, content: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let parent = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&parent)
        .with_context(|| format!("creating {}", parent.display()))?;
    let name = path.file_name().with_context(|| format!("{} is not a file path", path.display()))?;
    let mut random = [0u8; 6];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    let suffix = hex::encode(random);
    let temp = parent.join(format!(".{}.{}-{suffix}.tmp", name.to_string_lossy(), std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&temp)?;
        file.write_all(content)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(err).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns() {
        let table = render_table(
            &["NAME", "SERVER"],
            &[vec!["prod".into(), "https://a:6443".into()], vec!["staging-eu".into(), "-".into()]],
        );
        assert_eq!(table, "NAME         SERVER\nprod         https://a:6443\nstaging-eu   -\n");
    }

    #[test]
    fn fields_align_their_values() {
        let fields = render_fields(&[("name", "prod".into()), ("key algorithm", "p256".into())]);
        assert_eq!(fields, "name:           prod\nkey algorithm:  p256\n");
    }

    #[test]
    fn o_is_a_format_and_an_old_file_name_still_works() {
        let output = |o: Option<&str>, file: Option<&str>, old: Option<&str>| DocumentOutput {
            output: o.map(str::to_string),
            file: file.map(PathBuf::from),
            output_file: old.map(PathBuf::from),
        };
        let formats = ["yaml", "json"];
        assert_eq!(output(None, None, None).resolve(&formats).unwrap(), ("yaml", None));
        assert_eq!(output(Some("JSON"), None, None).resolve(&formats).unwrap(), ("json", None));
        let file = Some(PathBuf::from("k.yaml"));
        assert_eq!(
            output(Some("json"), Some("k.yaml"), None).resolve(&formats).unwrap(),
            ("json", file.clone())
        );
        assert_eq!(output(Some("k.yaml"), None, None).resolve(&formats).unwrap(), ("yaml", file.clone()));
        assert_eq!(output(None, None, Some("k.yaml")).resolve(&formats).unwrap(), ("yaml", file));
        assert!(output(Some("xml"), Some("k.yaml"), None).resolve(&formats).is_err());
    }

    #[test]
    fn private_files_replace_atomically_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/kubeconfig");
        write_private_file(&path, b"one").unwrap();
        write_private_file(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temp file left");
    }
}
