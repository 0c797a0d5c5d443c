//! Putting verified documents in place: the changed files replaced atomically, then pushed to a
//! running HAProxy through its runtime API (`cli::haproxy`), with no reload.

use anyhow::Context;

use super::args::CrlSyncArgs;
use super::verify::Verified;
use super::{Document, Documents};
use crate::cli::haproxy::Runtime;
use crate::cli::output::write_public_file;

/// Write the changed files (CRLs before CAs, so a CA never sits on disk without its CRL), then
/// push them to HAProxy: the map first (it blocks on every request, old connections too), then
/// the CRLs, then the CAs. A changed document HAProxy was not given a path for is logged.
pub async fn apply(
    args: &CrlSyncArgs,
    haproxy: Option<&Runtime>,
    changed: &Documents<bool>,
    verified: &Verified,
) -> anyhow::Result<()> {
    for document in [Document::RevokedMap, Document::CrlBundle, Document::CaBundle] {
        if *changed.get(document)
            && let (Some(path), Some(body)) = (args.out_path(document), verified.bodies.get(document))
        {
            write_public_file(path, body)?;
        }
    }
    let Some(haproxy) = haproxy else { return Ok(()) };
    let text =
        |body: &Option<Vec<u8>>| String::from_utf8_lossy(body.as_deref().unwrap_or_default()).into_owned();
    if changed.revoked_map
        && let (Some(path), Some(entries)) = (&args.haproxy_map_path, &verified.revoked)
    {
        haproxy.replace_map(path, entries).await.context("updating HAProxy's map")?;
    }
    if changed.crl_bundle
        && let Some(path) = &args.haproxy_crl_path
    {
        haproxy
            .replace_crl_file(path, &text(&verified.bodies.crl_bundle))
            .await
            .context("updating HAProxy's CRLs")?;
    }
    if changed.ca_bundle
        && let Some(path) = &args.haproxy_ca_path
    {
        haproxy
            .replace_ca_file(path, &text(&verified.bodies.ca_bundle))
            .await
            .context("updating HAProxy's CAs")?;
    }
    for (document, flag, pushed) in [
        (Document::CaBundle, "--haproxy-ca-path", args.haproxy_ca_path.is_some()),
        (Document::RevokedMap, "--haproxy-map-path", args.haproxy_map_path.is_some()),
    ] {
        if *changed.get(document) && !pushed {
            tracing::warn!(
                cluster.name = %args.cluster,
                "{} changed on disk only: HAProxy uses it from its next reload (pass {flag} to push it)",
                document.endpoint()
            );
        }
    }
    Ok(())
}
