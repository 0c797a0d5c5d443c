//! pkilint (RFC 5280 linters) on what kca signs: CA certificates, user certificates, CRLs with and
//! without entries, for each key algorithm.

use std::path::Path;
use std::process::Command;

use reqwest::Method;
use serde_json::json;

use crate::common::*;
use crate::revocation::issue_user;
use kca::token::Scope;

/// Lint a document with `program` (`lint_pkix_cert`, `lint_crl`); answers the findings at WARNING
/// and above (empty when clean). Panics when pkilint did not get to a verdict.
pub fn pkilint(program: &str, args: &[&str], document: &str, dir: &Path) -> String {
    lint(Command::new(program), args, document, dir).unwrap_or_else(|e| panic!("{program} {args:?}: {e}"))
}

/// Run a pkilint `command` on `document`. pkilint's exit status is the number of findings it
/// printed at the threshold (at most 255), each on a line indented by four spaces, and it writes
/// nothing on stderr. Anything else is pkilint failing, not a verdict: a document it could not load
/// (status 1, a message on stderr), a usage error (status 2), a Python traceback, a signal.
fn lint(mut command: Command, args: &[&str], document: &str, dir: &Path) -> Result<String, String> {
    let file = temp_file(dir, "document.pem", document.as_bytes());
    let output = command
        .arg("lint")
        .args(args)
        .args(["-s", "WARNING"])
        .arg(&file)
        .output()
        .map_err(|e| format!("cannot run (tests/run.sh installs it): {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let failed = |why: String| {
        Err(format!("{why} (exit status {}); stdout:\n{stdout}\nstderr:\n{stderr}", output.status))
    };
    let Some(code) = output.status.code() else {
        return failed("killed by a signal".into());
    };
    if !stderr.trim().is_empty() {
        return failed("pkilint wrote on stderr".into());
    }
    let findings = stdout.lines().filter(|line| line.starts_with("    ")).count();
    if usize::try_from(code) != Ok(findings.min(255)) {
        return failed(format!("the exit status is not the number of findings printed ({findings})"));
    }
    Ok(stdout.trim().to_string())
}

/// A pkilint that fails must fail the test using it, not pass for a clean document: a fake
/// `lint_pkix_cert`, first on the PATH of that one command, stands in for each way of failing.
#[test]
fn a_failing_pkilint_fails_the_helper() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("lint_pkix_cert");
    let run = |script: &str| {
        std::fs::write(&fake, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut command = Command::new("lint_pkix_cert");
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(&path)));
        command.env("PATH", path.unwrap());
        lint(command, &[], "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", dir.path())
    };
    let traceback = "echo 'Traceback (most recent call last):' >&2
echo '  File \"/usr/local/bin/lint_pkix_cert\", line 5, in <module>' >&2
echo 'ModuleNotFoundError: No module named pkilint' >&2
exit 1";
    for (case, script, reason) in [
        ("a traceback", traceback, "pkilint wrote on stderr"),
        ("a load error", "echo 'Failed to load certificate: Incorrect padding' >&2; exit 1", "on stderr"),
        ("a silent non-zero status", "exit 1", "the exit status is not the number of findings printed (0)"),
        ("a usage error", "exit 2", "the exit status is not the number of findings printed (0)"),
        ("a signal", "kill -SEGV $$", "killed by a signal"),
        ("a status short of the findings", "printf 'V @ certificate\n    pkix.a (ERROR)\n'", "printed (1)"),
    ] {
        let err = run(script).expect_err(case);
        assert!(err.contains(reason), "{case}: {err}");
    }
    // Findings are a verdict, not a failure; and it was the fake that ran.
    let finding = "KeyUsagePresenceValidator @ certificate.tbsCertificate.extensions
    pkix.ca_certificate_no_ku_extension (ERROR)";
    assert_eq!(run(&format!("printf '{finding}\\n\\n'; exit 1")).unwrap(), finding);
    assert_eq!(run("echo; exit 0").unwrap(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_crls_pass_pkilint() {
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.token(&[Scope::Admin]).await;
    let dir = tempfile::tempdir().unwrap();
    for (cluster, algorithm) in [("p256", "p256"), ("p384", "p384"), ("ed25519", "ed25519")] {
        server
            .json(
                Method::POST,
                "/v1/clusters",
                Some(&admin),
                Some(json!({"name": cluster, "server": "https://k:6443", "key_algorithm": algorithm})),
                201,
            )
            .await;
        let (_, _, empty_crl) = server
            .send(Method::GET, &format!("/v1/clusters/{cluster}/authorities/operators/crl.pem"), None, None)
            .await;
        let user = issue_user(&server, &admin, cluster, "alice", &["dev", "ops"]).await;
        let other = issue_user(&server, &admin, cluster, "bob", &[]).await;
        for (serial, reason) in
            [(&user["serial"], json!({"reason": "keyCompromise"})), (&other["serial"], json!({}))]
        {
            let path = format!("/v1/clusters/{cluster}/certificates/{}/revoke", serial.as_str().unwrap());
            server.json(Method::POST, &path, Some(&admin), Some(reason), 200).await;
        }
        let (_, _, full_crl) = server
            .send(Method::GET, &format!("/v1/clusters/{cluster}/authorities/operators/crl.pem"), None, None)
            .await;
        assert_eq!(
            pkilint("lint_crl", &["-t", "CRL", "-p", "PKIX"], &empty_crl, dir.path()),
            "",
            "{cluster}: empty CRL"
        );
        assert_eq!(
            pkilint("lint_crl", &["-t", "CRL", "-p", "PKIX"], &full_crl, dir.path()),
            "",
            "{cluster}: CRL"
        );
        let ca =
            server.json(Method::GET, &format!("/v1/clusters/{cluster}/authorities"), None, None, 200).await;
        for authority in ca.as_array().unwrap() {
            let findings =
                pkilint("lint_pkix_cert", &[], authority["certificate_pem"].as_str().unwrap(), dir.path());
            assert_eq!(findings, "", "{cluster}: {} CA", authority["kind"]);
        }
        let findings = pkilint("lint_pkix_cert", &[], user["certificate_pem"].as_str().unwrap(), dir.path());
        assert_eq!(findings, "", "{cluster}: user certificate");
    }
}
