//! `kca audit`: the audit trail, newest first, page by page, filtered here by cluster, time,
//! actor and action (the API pages the whole trail; an admin token limited to some clusters sees
//! only theirs).

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

/// The filters, applied to each event.
struct Filter {
    cluster_id: Option<String>,
    since: Option<OffsetDateTime>,
    actor: Option<String>,
    action: Option<String>,
}

impl Filter {
    fn matches(&self, event: &Value) -> bool {
        let action_matches = |wanted: &str, action: &str| match wanted.strip_suffix('*') {
            Some(prefix) => action.starts_with(prefix),
            None => action == wanted,
        };
        self.cluster_id.as_deref().is_none_or(|id| event["cluster_id"].as_str() == Some(id))
            && self.actor.as_deref().is_none_or(|actor| event["actor"].as_str() == Some(actor))
            && self
                .action
                .as_deref()
                .is_none_or(|a| event["action"].as_str().is_some_and(|e| action_matches(a, e)))
            && self.since.is_none_or(|since| at(event).is_some_and(|at| at >= since))
    }
}

fn at(event: &Value) -> Option<OffsetDateTime> {
    event["at"].as_str().and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
}

#[derive(Deserialize)]
struct Page {
    items: Vec<Value>,
    next_cursor: Option<String>,
}

pub async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.connection.resolve()?)?;
    let cluster_id = match &args.cluster {
        None => None,
        Some(cluster) if uuid::Uuid::parse_str(cluster).is_ok() => Some(cluster.to_lowercase()),
        Some(cluster) => {
            let found: Value = client.get_json(&["v1", "clusters", cluster]).await?;
            Some(found["id"].as_str().context("the cluster has no id")?.to_string())
        }
    };
    let filter =
        Filter { cluster_id, since: args.since, actor: args.actor.clone(), action: args.action.clone() };
    let mut shown = Vec::new();
    let mut cursor: Option<String> = None;
    'pages: loop {
        let mut request =
            client.authorized(reqwest::Method::GET, &["v1", "audit"])?.query(&[("limit", "100")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let page: Page = client.json(request).await?;
        for event in page.items {
            // Newest first: past --since, nothing older can match.
            if args.since.is_some_and(|since| at(&event).is_some_and(|at| at < since)) {
                break 'pages;
            }
            if filter.matches(&event) {
                shown.push(event);
                if args.limit != 0 && shown.len() >= args.limit {
                    break 'pages;
                }
            }
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
    use serde_json::json;

    #[test]
    fn events_match_every_filter_given() {
        let event = json!({"at": "2030-01-01T10:00:00Z", "actor": "alice", "action": "certificate.revoke",
                           "cluster_id": "c1"});
        let filter =
            |cluster: Option<&str>, actor: Option<&str>, action: Option<&str>, since: Option<&str>| Filter {
                cluster_id: cluster.map(str::to_string),
                actor: actor.map(str::to_string),
                action: action.map(str::to_string),
                since: since.map(|s| OffsetDateTime::parse(s, &Rfc3339).unwrap()),
            };
        assert!(filter(None, None, None, None).matches(&event));
        assert!(
            filter(Some("c1"), Some("alice"), Some("certificate.*"), Some("2030-01-01T09:00:00Z"))
                .matches(&event)
        );
        assert!(filter(None, None, Some("certificate.revoke"), None).matches(&event));
        assert!(!filter(None, None, Some("certificate"), None).matches(&event));
        assert!(!filter(Some("c2"), None, None, None).matches(&event));
        assert!(!filter(None, Some("bob"), None, None).matches(&event));
        assert!(!filter(None, None, None, Some("2030-01-01T11:00:00Z")).matches(&event));
        assert!(parse_since("2h").unwrap() < OffsetDateTime::now_utc());
        assert!(parse_since("yesterday").is_err());
    }
}
