//! The web UI: its files as served, and an end-to-end run in real headless Chromium
//! (`tests/browser/ui.mjs`, driven by playwright-core) against a real kca.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;

use crate::common::*;
use kca::token::Scope;

/// The longest the browser run may take before it is killed and the test fails.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_files_are_served_with_types_validators_and_csp() {
    let server = TestServer::start(Backend::Sqlite).await;
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/app.css", "text/css; charset=utf-8"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let (status, headers, body) = server.send(Method::GET, path, None, None).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
        assert_eq!(headers["content-security-policy"], kca::http::web::CONTENT_SECURITY_POLICY, "{path}");
        assert!(!body.is_empty(), "{path}");
        let etag = headers["etag"].to_str().unwrap();
        let revalidated = server
            .client
            .get(format!("{}{path}", server.url))
            .header("If-None-Match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(revalidated.status(), 304, "{path}");
    }
    // The API keeps answering problems, not the page.
    let (status, headers, _) = server.send(Method::GET, "/no-such-page", None, None).await;
    assert_eq!(status, 404);
    assert_eq!(headers["content-type"], "application/problem+json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_issues_and_revokes_in_headless_chromium() {
    let server = TestServer::start(Backend::Sqlite).await;
    let token = server.token(&[Scope::Admin]).await;
    let cert = server.data_dir.path().join("tls/dev-cert.pem");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scripts = root.join("tests/browser");
    // `CARGO_TARGET_TMPDIR` is `<target>/tmp`: the screenshots go beside it.
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("browser-screenshots");
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).unwrap();

    // The set-up (tests/run.sh) installs the modules from the lock file; a test installs nothing.
    assert!(
        scripts.join("node_modules/playwright-core/package.json").exists(),
        "tests/browser/node_modules is missing: run `bash tests/run.sh --setup-only` once"
    );

    // The server runs on this runtime; the browser run blocks a thread of its own.
    let mut node = Command::new("node");
    node.arg(scripts.join("ui.mjs")).arg(&server.url).arg(&cert).arg(&out_dir).env("KCA_TOKEN", &token);
    match run_with_timeout(node, "node ui.mjs", &out_dir.join("ui.log"), BROWSER_TIMEOUT).await {
        Ok(output) => println!("{output}"),
        Err(output) => panic!("the browser test failed (screenshots in {}):\n{output}", out_dir.display()),
    }
    let screenshots = std::fs::read_dir(&out_dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "png"))
        .count();
    assert!(screenshots >= 10, "only {screenshots} screenshots in {}", out_dir.display());
}

/// Run `command` with stdout and stderr in `log` (a file, so a chatty child cannot fill a pipe and
/// stall), killing it after `timeout`. Answers the log, `Err` unless it exited successfully.
/// `name` stands for the command in messages (its Debug form would show the environment, a token).
async fn run_with_timeout(
    mut command: Command,
    name: &'static str,
    log: &Path,
    timeout: Duration,
) -> Result<String, String> {
    let log: PathBuf = log.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::create(&log).unwrap();
        command.stdin(Stdio::null()).stdout(file.try_clone().unwrap()).stderr(file);
        let mut child = command.spawn().map_err(|e| format!("{name} does not start: {e}"))?;
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        match status {
            Some(status) if status.success() => Ok(output),
            Some(status) => Err(format!("{name} exited with {status}:\n{output}")),
            None => Err(format!("{name} was killed after {timeout:?}:\n{output}")),
        }
    })
    .await
    .unwrap()
}
