//! `kca audit`: the audit trail, newest first, page by page, filtered by the server by cluster,
//! time, actor and action (an admin token limited to some clusters sees only theirs).

use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::client::Client;
use super::output::{Format, FormatArg, cell, print_json, render_table};
use super::settings::ConnectionArgs;
use crate::config::parse_duration;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    kca audit --cluster prod --since 24h\n  \
    kca audit --actor alice@example.com --action 'certificate.*' -o json")]
pub struct AuditArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Only events of this cluster (name or id; an id also finds a deleted cluster's events).
    #[arg(long, value_name = "CLUSTER")]
    pub cluster: Option<String>,
    /// Only events since then: a duration ago (30m, 24h, 7d) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    pub since: Option<OffsetDateTime>,
    /// Only events before then: a duration ago (30m, 24h, 7d) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    pub until: Option<OffsetDateTime>,
    /// Only events of this actor (token subject), exactly.
    #[arg(long, value_name = "ACTOR")]
    pub actor: Option<String>,
    /// Only this action, e.g. certificate.revoke; a trailing `*` matches a prefix (certificate.*).
    #[arg(long, value_name = "ACTION")]
    pub action: Option<String>,
    /// Show at most N events (0: all).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: usize,
    #[command(flatten)]
    pub format: FormatArg,
}

fn parse_since(text: &str) -> Result<OffsetDateTime, String> {
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(at);
    }
    let ago = parse_duration(text).map_err(|e| format!("{e} (or give an RFC 3339 time)"))?;
    let ago = time::Duration::try_from(ago).map_err(|e| e.to_string())?;
    Ok(OffsetDateTime::now_utc() - ago)
}

#[derive(Deserialize)]
struct Page {
    items: Vec<Value>,
    next_cursor: Option<String>,
}

pub async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.connection.resolve()?)?;
    let mut filters: Vec<(&str, String)> = Vec::new();
    if let Some(cluster) = &args.cluster {
        filters.push(("cluster", cluster.clone()));
    }
    if let Some(actor) = &args.actor {
        filters.push(("actor", actor.clone()));
    }
    if let Some(action) = &args.action {
        filters.push(("action", action.clone()));
    }
    for (name, when) in [("since", args.since), ("until", args.until)] {
        if let Some(when) = when {
            filters.push((name, when.format(&Rfc3339).context("formatting a time")?));
        }
    }
    let mut shown = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let wanted = if args.limit == 0 { 500 } else { (args.limit - shown.len()).min(500) };
        let mut request = client
            .authorized(reqwest::Method::GET, &["v1", "audit"])?
            .query(&[("limit", wanted.to_string())])
            .query(&filters);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let page: Page = client.json(request).await?;
        shown.extend(page.items);
        if args.limit != 0 && shown.len() >= args.limit {
            shown.truncate(args.limit);
            break;
        }
        match page.next_cursor {
            Some(next) if cursor.as_ref() != Some(&next) => cursor = Some(next),
            _ => break,
        }
    }
    match args.format.format {
        Format::Json => print_json(&shown)?,
        Format::Text => print!("{}", audit_table(&shown)),
    }
    Ok(())
}

fn audit_table(events: &[Value]) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                cell(&e["at"]),
                cell(&e["actor"]),
                cell(&e["action"]),
                format!("{}/{}", cell(&e["object_type"]), cell(&e["object_id"])),
                cell(&e["remote_addr"]),
            ]
        })
        .collect();
    render_table(&["AT", "ACTOR", "ACTION", "OBJECT", "FROM"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_durations_ago_or_rfc3339() {
        assert!(parse_since("2h").unwrap() < OffsetDateTime::now_utc());
        assert_eq!(
            parse_since("2030-01-01T10:00:00Z").unwrap(),
            OffsetDateTime::parse("2030-01-01T10:00:00Z", &Rfc3339).unwrap()
        );
        assert!(parse_since("yesterday").is_err());
    }
}
