//! HAProxy's runtime API over its unix socket (`stats socket PATH level admin`): replacing a CRL
//! file, a CA file and a map in a running HAProxy, with no reload, every answer checked.
//!
//! The protocol is text, one command per connection: HAProxy answers and closes. A command with a
//! payload ends its line with `<<` and the payload with an empty line. HAProxy drops a command
//! larger than `tune.bufsize` (16 KiB by default) and closes without a word, so silence is a
//! failure here, and a map is sent in chunks and read back after the commit.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Map lines sent per `add map` command: well under the default 16 KiB buffer.
const MAP_CHUNK_BYTES: usize = 8 * 1024;

/// HAProxy answers a command within this time, or the command failed.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum HaproxyError {
    #[error("talking to HAProxy at {socket}: {source}")]
    Io { socket: String, source: std::io::Error },
    #[error("HAProxy at {socket} did not answer within {seconds} s")]
    Timeout { socket: String, seconds: u64 },
    #[error(
        "HAProxy closed the connection without answering `{command}` (a command larger than \
         tune.bufsize, 16 KiB by default, is dropped: raise tune.bufsize in the global section)"
    )]
    Silent { command: String },
    #[error("HAProxy refused `{command}`: {answer}")]
    Refused { command: String, answer: String },
    #[error("after `commit map` HAProxy's map {path} holds {found} entries, {expected} were sent")]
    MapMismatch { path: String, expected: usize, found: usize },
    #[error("{0:?} cannot be sent to HAProxy: a path with no space, control character or ';' is needed")]
    BadPath(String),
    #[error(
        "a payload line cannot be sent to HAProxy: empty lines, control characters and ';' are not allowed"
    )]
    BadPayload,
}

/// A path as HAProxy's configuration names it (`crl-file`, `ca-file`, `map(...)`): it goes on a
/// command line, so it must hold no space, control character or `;` (the command separator).
pub fn check_path(path: &str) -> Result<(), HaproxyError> {
    let unsafe_char = |c: char| c.is_whitespace() || c.is_control() || c == ';' || c == '\\';
    if path.is_empty() || path.chars().any(unsafe_char) {
        return Err(HaproxyError::BadPath(path.to_string()));
    }
    Ok(())
}

/// The runtime API of one HAProxy.
#[derive(Debug, Clone)]
pub struct Runtime {
    socket: PathBuf,
}

impl Runtime {
    pub fn new(socket: &Path) -> Self {
        Self { socket: socket.to_path_buf() }
    }

    fn socket_text(&self) -> String {
        self.socket.display().to_string()
    }

    /// Send one command (and its payload lines), and read the whole answer.
    pub async fn command(&self, line: &str, payload: Option<&str>) -> Result<String, HaproxyError> {
        let mut request = String::from(line);
        if let Some(payload) = payload {
            if payload.split('\n').any(|l| l.chars().any(|c| c.is_control() || c == ';'))
                || payload.trim_end_matches('\n').split('\n').any(str::is_empty)
            {
                return Err(HaproxyError::BadPayload);
            }
            request.push_str(" <<\n");
            request.push_str(payload.trim_end_matches('\n'));
            request.push('\n');
        }
        request.push('\n');
        let io = |source| HaproxyError::Io { socket: self.socket_text(), source };
        let exchange = async {
            let mut stream = tokio::net::UnixStream::connect(&self.socket).await.map_err(io)?;
            stream.write_all(request.as_bytes()).await.map_err(io)?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.map_err(io)?;
            Ok(String::from_utf8_lossy(&answer).into_owned())
        };
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, exchange).await.map_err(|_| {
            HaproxyError::Timeout { socket: self.socket_text(), seconds: ANSWER_TIMEOUT.as_secs() }
        })??;
        if answer.is_empty() {
            return Err(HaproxyError::Silent { command: line.to_string() });
        }
        Ok(answer)
    }

    /// Replace the CRLs HAProxy holds for `path` (a `crl-file` of its configuration):
    /// `set ssl crl-file` then `commit ssl crl-file`. New full handshakes use them at once.
    pub async fn replace_crl_file(&self, path: &str, pem: &str) -> Result<(), HaproxyError> {
        self.replace_ssl_file("crl-file", path, pem).await
    }

    /// Replace the CA certificates HAProxy holds for `path` (a `ca-file`):
    /// `set ssl ca-file` then `commit ssl ca-file` (HAProxy 2.5 and later).
    pub async fn replace_ca_file(&self, path: &str, pem: &str) -> Result<(), HaproxyError> {
        self.replace_ssl_file("ca-file", path, pem).await
    }

    async fn replace_ssl_file(&self, kind: &str, path: &str, pem: &str) -> Result<(), HaproxyError> {
        check_path(path)?;
        let set = format!("set ssl {kind} {path}");
        let answer = self.command(&set, Some(pem)).await?;
        let lower = answer.to_ascii_lowercase();
        if !(lower.contains("transaction created") || lower.contains("transaction updated")) {
            self.abort(kind, path).await;
            return Err(refused(&set, &answer));
        }
        let commit = format!("commit ssl {kind} {path}");
        let answer = match self.command(&commit, None).await {
            Ok(answer) => answer,
            Err(err) => {
                self.abort(kind, path).await;
                return Err(err);
            }
        };
        let last_line = answer.lines().map(str::trim).rfind(|l| !l.is_empty());
        if last_line != Some("Success!") || answer.lines().any(|l| l.trim_start().starts_with("Error")) {
            self.abort(kind, path).await;
            return Err(refused(&commit, &answer));
        }
        Ok(())
    }

    /// Drop a pending transaction, so the next `set` starts clean. Best effort.
    async fn abort(&self, kind: &str, path: &str) {
        let _ = self.command(&format!("abort ssl {kind} {path}"), None).await;
    }

    /// Replace every entry of the map `path` at once: `prepare map`, `add map @version` in
    /// chunks, `commit map @version`; then read the map back and compare the keys.
    pub async fn replace_map(&self, path: &str, entries: &[(String, String)]) -> Result<(), HaproxyError> {
        check_path(path)?;
        let prepare = format!("prepare map {path}");
        let answer = self.command(&prepare, None).await?;
        let version = answer
            .trim()
            .strip_prefix("New version created:")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| refused(&prepare, &answer))?;
        let add = format!("add map @{version} {path}");
        let mut chunk = String::new();
        for (key, value) in entries {
            let line = format!("{key} {value}\n");
            if !chunk.is_empty() && chunk.len() + line.len() > MAP_CHUNK_BYTES {
                expect_blank(&add, &self.command(&add, Some(&chunk)).await?)?;
                chunk.clear();
            }
            chunk.push_str(&line);
        }
        if !chunk.is_empty() {
            expect_blank(&add, &self.command(&add, Some(&chunk)).await?)?;
        }
        let commit = format!("commit map @{version} {path}");
        expect_blank(&commit, &self.command(&commit, None).await?)?;

        let shown = self.command(&format!("show map {path}"), None).await?;
        let keys: BTreeSet<&str> = shown.lines().filter_map(|l| l.split_whitespace().nth(1)).collect();
        let expected: BTreeSet<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        if keys != expected {
            return Err(HaproxyError::MapMismatch {
                path: path.to_string(),
                expected: expected.len(),
                found: keys.len(),
            });
        }
        Ok(())
    }
}

fn refused(command: &str, answer: &str) -> HaproxyError {
    let answer: String = answer.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(300).collect();
    HaproxyError::Refused { command: command.to_string(), answer }
}

/// Map commands answer an empty line on success and a message on failure.
fn expect_blank(command: &str, answer: &str) -> Result<(), HaproxyError> {
    if answer.trim().is_empty() { Ok(()) } else { Err(refused(command, answer)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_would_split_a_command_are_refused() {
        assert!(check_path("/etc/haproxy/client-crl.pem").is_ok());
        for bad in ["", "/etc/ha proxy/crl.pem", "/x;show info", "/x\n", "/x\\y"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }

    /// A one-shot fake of HAProxy's socket: answers each connection with the next scripted
    /// answer and records what it was sent.
    async fn fake_haproxy(
        answers: Vec<&'static str>,
    ) -> (tempfile::TempDir, tokio::task::JoinHandle<Vec<String>>) {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::UnixListener::bind(dir.path().join("admin.sock")).unwrap();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for answer in answers {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buffer = vec![0u8; 64 * 1024];
                let mut request = String::new();
                // A command ends with a newline; a payload command with an empty line.
                loop {
                    let n = stream.read(&mut buffer).await.unwrap();
                    request.push_str(std::str::from_utf8(&buffer[..n]).unwrap());
                    let payload = request.lines().next().is_some_and(|l| l.ends_with("<<"));
                    if n == 0 || (!payload && request.ends_with('\n')) || request.ends_with("\n\n") {
                        break;
                    }
                }
                stream.write_all(answer.as_bytes()).await.unwrap();
                seen.push(request);
            }
            seen
        });
        (dir, task)
    }

    #[tokio::test]
    async fn a_crl_swap_is_set_then_committed() {
        let (dir, task) = fake_haproxy(vec![
            "transaction created for CRL /etc/haproxy/crl.pem!\n",
            "Committing /etc/haproxy/crl.pem.\nSuccess!\n",
        ])
        .await;
        let runtime = Runtime::new(&dir.path().join("admin.sock"));
        runtime
            .replace_crl_file(
                "/etc/haproxy/crl.pem",
                "-----BEGIN X509 CRL-----\nAA==\n-----END X509 CRL-----\n",
            )
            .await
            .unwrap();
        let seen = task.await.unwrap();
        assert_eq!(
            seen[0],
            "set ssl crl-file /etc/haproxy/crl.pem <<\n-----BEGIN X509 CRL-----\nAA==\n-----END X509 CRL-----\n\n"
        );
        assert_eq!(seen[1], "commit ssl crl-file /etc/haproxy/crl.pem\n");
    }

    #[tokio::test]
    async fn unexpected_answers_fail_and_abort_the_transaction() {
        let (dir, task) = fake_haproxy(vec![
            "Can't replace a CRL file which is not referenced by the configuration!\n",
            "Transaction aborted\n",
        ])
        .await;
        let runtime = Runtime::new(&dir.path().join("admin.sock"));
        let err = runtime.replace_crl_file("/x.pem", "A\n").await.unwrap_err();
        assert!(matches!(err, HaproxyError::Refused { .. }), "{err}");
        assert!(err.to_string().contains("not referenced"), "{err}");
        assert_eq!(task.await.unwrap()[1], "abort ssl crl-file /x.pem\n");

        // Silence (what HAProxy does with an oversized command) is a failure too.
        let (dir, _task) = fake_haproxy(vec![""]).await;
        let runtime = Runtime::new(&dir.path().join("admin.sock"));
        let err = runtime.replace_ca_file("/ca.pem", "A\n").await.unwrap_err();
        assert!(matches!(err, HaproxyError::Silent { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_map_is_replaced_in_one_version_and_read_back() {
        let (dir, task) = fake_haproxy(vec![
            "New version created: 4\n",
            "\n",
            "\n",
            "0x1 AB keyCompromise\n0x2 CD unspecified\n\n",
        ])
        .await;
        let runtime = Runtime::new(&dir.path().join("admin.sock"));
        let entries = vec![("AB".into(), "keyCompromise".into()), ("CD".into(), "unspecified".into())];
        runtime.replace_map("/m.map", &entries).await.unwrap();
        let seen = task.await.unwrap();
        assert_eq!(seen[0], "prepare map /m.map\n");
        assert_eq!(seen[1], "add map @4 /m.map <<\nAB keyCompromise\nCD unspecified\n\n");
        assert_eq!(seen[2], "commit map @4 /m.map\n");
        assert_eq!(seen[3], "show map /m.map\n");

        let (dir, _task) =
            fake_haproxy(vec!["New version created: 5\n", "\n", "\n", "0x1 AB keyCompromise\n\n"]).await;
        let runtime = Runtime::new(&dir.path().join("admin.sock"));
        let err = runtime.replace_map("/m.map", &entries).await.unwrap_err();
        assert!(matches!(err, HaproxyError::MapMismatch { expected: 2, found: 1, .. }), "{err}");
    }
}
