//! `kca clusters update NAME`: change a cluster's server, labels and issuance policy (every
//! field, access rules included) with one JSON merge patch, sent with `If-Match` so that a change
//! made by someone else meanwhile is never overwritten.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

use super::client::{Client, ClientError};
use super::output::FormatArg;
use crate::config::parse_duration;

/// The list fields of the policy, as `--clear` names them, and their JSON names.
const LISTS: [(&str, &str); 7] = [
    ("allowed-groups", "allowed_groups"),
    ("allowed-privileged-groups", "allowed_privileged_groups"),
    ("allowed-privileged-users", "allowed_privileged_users"),
    ("allowed-profiles", "allowed_profiles"),
    ("control-plane-names", "control_plane_names"),
    ("node-names", "node_names"),
    ("access-rules", "access_rules"),
];

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "A list flag given replaces that list; `--clear LIST` empties it. Examples:\n  \
    kca clusters update prod --max-ttl 8h --allowed-group 'team-*' --allowed-group viewers\n  \
    kca clusters update prod --label env=prod --remove-label tier\n  \
    kca clusters update prod --access-rule platform=team-platform,viewers,max-ttl=8h\n  \
    kca clusters update prod --remove-access-rule contractors --clear node-names")]
pub struct UpdateArgs {
    /// Cluster name or id.
    pub cluster: String,
    /// The kube-apiserver URL written into kubeconfigs (https).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Set a label `key=value` (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = super::clusters::parse_label)]
    pub labels: Vec<(String, String)>,
    /// Remove a label (repeatable).
    #[arg(long = "remove-label", value_name = "KEY")]
    pub remove_labels: Vec<String>,
    /// Policy: TTL of a certificate when the request gives none.
    #[arg(long, value_name = "TTL", value_parser = parse_duration)]
    pub default_ttl: Option<Duration>,
    /// Policy: shortest TTL a request may ask for.
    #[arg(long, value_name = "TTL", value_parser = parse_duration)]
    pub min_ttl: Option<Duration>,
    /// Policy: longest TTL a request may ask for.
    #[arg(long, value_name = "TTL", value_parser = parse_duration)]
    pub max_ttl: Option<Duration>,
    /// Policy: longest TTL of a component certificate.
    #[arg(long, value_name = "TTL", value_parser = parse_duration)]
    pub component_max_ttl: Option<Duration>,
    /// Policy: most groups in one certificate.
    #[arg(long, value_name = "N")]
    pub max_groups: Option<u32>,
    /// Policy: whether admin tokens may issue system:masters.
    #[arg(long, value_name = "BOOL")]
    pub allow_system_masters: Option<bool>,
    /// Policy: a glob a requested group must match (repeatable; replaces the list).
    #[arg(long = "allowed-group", value_name = "PATTERN")]
    pub allowed_groups: Vec<String>,
    /// Policy: a privileged group (system:…, kubeadm:…) admins may issue (repeatable; replaces).
    #[arg(long = "allowed-privileged-group", value_name = "GROUP")]
    pub allowed_privileged_groups: Vec<String>,
    /// Policy: a privileged user (system:…) admins may issue (repeatable; replaces).
    #[arg(long = "allowed-privileged-user", value_name = "USER")]
    pub allowed_privileged_users: Vec<String>,
    /// Policy: a component profile admins may issue (repeatable; replaces; see GET /v1/profiles).
    #[arg(long = "allowed-profile", value_name = "PROFILE")]
    pub allowed_profiles: Vec<String>,
    /// Policy: a DNS name or IP the control plane's serving certificates may carry (repeatable;
    /// replaces).
    #[arg(long = "control-plane-name", value_name = "NAME")]
    pub control_plane_names: Vec<String>,
    /// Policy: a glob of node names (repeatable; replaces).
    #[arg(long = "node-name", value_name = "PATTERN")]
    pub node_names: Vec<String>,
    /// Policy: add or replace the access rule of an identity-provider group:
    /// `IDP_GROUP=GROUP,GROUP,...[,max-ttl=TTL]` (repeatable).
    #[arg(long = "access-rule", value_name = "RULE", value_parser = parse_access_rule)]
    pub access_rules: Vec<Value>,
    /// Policy: remove the access rule of an identity-provider group (repeatable).
    #[arg(long = "remove-access-rule", value_name = "IDP_GROUP")]
    pub remove_access_rules: Vec<String>,
    /// Empty a policy list (repeatable).
    #[arg(long = "clear", value_name = "LIST", value_parser = LISTS.map(|(flag, _)| flag))]
    pub clear: Vec<String>,
    #[command(flatten)]
    pub format: FormatArg,
}

/// `IDP_GROUP=GROUP,GROUP,...[,max-ttl=TTL]` as an access rule.
fn parse_access_rule(text: &str) -> Result<Value, String> {
    let (idp_group, rest) = text
        .split_once('=')
        .filter(|(g, _)| !g.is_empty())
        .ok_or_else(|| format!("{text:?} is not IDP_GROUP=GROUP,GROUP,...[,max-ttl=TTL]"))?;
    let mut rule = json!({"idp_group": idp_group, "groups": []});
    for item in rest.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        match item.strip_prefix("max-ttl=") {
            Some(ttl) => rule["max_ttl_seconds"] = parse_duration(ttl)?.as_secs().into(),
            None => rule["groups"].as_array_mut().expect("an array").push(item.into()),
        }
    }
    Ok(rule)
}

impl UpdateArgs {
    /// The merge patch that makes these changes to `current` (the cluster as read).
    fn patch(&self, current: &Value) -> anyhow::Result<Value> {
        let mut policy = Map::new();
        let durations = [
            ("default_ttl_seconds", self.default_ttl),
            ("min_ttl_seconds", self.min_ttl),
            ("max_ttl_seconds", self.max_ttl),
            ("component_max_ttl_seconds", self.component_max_ttl),
        ];
        for (field, ttl) in durations {
            if let Some(ttl) = ttl {
                policy.insert(field.into(), ttl.as_secs().into());
            }
        }
        if let Some(n) = self.max_groups {
            policy.insert("max_groups".into(), n.into());
        }
        if let Some(allow) = self.allow_system_masters {
            policy.insert("allow_system_masters".into(), allow.into());
        }
        for (flag, field) in LISTS {
            if self.clear.iter().any(|c| c == flag) {
                policy.insert(field.into(), json!([]));
            }
        }
        let lists = [
            ("allowed_groups", &self.allowed_groups),
            ("allowed_privileged_groups", &self.allowed_privileged_groups),
            ("allowed_privileged_users", &self.allowed_privileged_users),
            ("allowed_profiles", &self.allowed_profiles),
            ("control_plane_names", &self.control_plane_names),
            ("node_names", &self.node_names),
        ];
        for (field, values) in lists {
            if !values.is_empty() {
                if policy.contains_key(field) {
                    bail!("--clear and a value for the same list: give only the values");
                }
                policy.insert(field.into(), json!(values));
            }
        }
        if !self.access_rules.is_empty() || !self.remove_access_rules.is_empty() {
            let mut rules: Vec<Value> = if policy.contains_key("access_rules") {
                Vec::new()
            } else {
                current["policy"]["access_rules"].as_array().cloned().unwrap_or_default()
            };
            for idp_group in &self.remove_access_rules {
                let before = rules.len();
                rules.retain(|r| r["idp_group"].as_str() != Some(idp_group));
                if rules.len() == before && !policy.contains_key("access_rules") {
                    bail!("the cluster has no access rule for {idp_group:?}");
                }
            }
            for rule in &self.access_rules {
                match rules.iter_mut().find(|r| r["idp_group"] == rule["idp_group"]) {
                    Some(existing) => *existing = rule.clone(),
                    None => rules.push(rule.clone()),
                }
            }
            policy.insert("access_rules".into(), rules.into());
        }
        let mut patch = Map::new();
        if let Some(server) = &self.server {
            patch.insert("server".into(), server.clone().into());
        }
        if !policy.is_empty() {
            patch.insert("policy".into(), policy.into());
        }
        let mut labels = Map::new();
        for key in &self.remove_labels {
            labels.insert(key.clone(), Value::Null);
        }
        for (key, value) in &self.labels {
            labels.insert(key.clone(), value.clone().into());
        }
        if !labels.is_empty() {
            patch.insert("labels".into(), labels.into());
        }
        if patch.is_empty() {
            bail!("nothing to change: give --server, --label, a policy flag or --clear (see --help)");
        }
        Ok(patch.into())
    }
}

pub async fn update(client: &Client, args: &UpdateArgs) -> anyhow::Result<()> {
    let segments = ["v1", "clusters", args.cluster.as_str()];
    let (current, etag): (Value, _) = client.get_json_versioned(&segments).await?;
    let patch = args.patch(&current)?;
    let etag = etag.context("the server gave no ETag for the cluster: cannot update it safely")?;
    let updated: Value =
        client.patch_json(&segments, &patch, Some(&etag)).await.map_err(|err| match err {
            ClientError::Problem { status, .. } | ClientError::Status { status, .. }
                if status == reqwest::StatusCode::PRECONDITION_FAILED =>
            {
                anyhow::anyhow!(
                    "cluster {:?} was changed by someone else while this update was prepared; nothing was \
                 changed: run the command again",
                    args.cluster
                )
            }
            other => other.into(),
        })?;
    eprintln!("kca: updated cluster {}", updated["name"].as_str().unwrap_or(&args.cluster));
    super::clusters::show(&updated, args.format.format)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: UpdateArgs,
    }

    fn patch(argv: &[&str], current: Value) -> anyhow::Result<Value> {
        let parsed = Wrapper::try_parse_from([&["update", "prod"], argv].concat())?;
        parsed.args.patch(&current)
    }

    #[test]
    fn only_what_is_given_is_patched_and_access_rules_merge_by_idp_group() {
        let current = json!({"policy": {"access_rules": [
            {"idp_group": "platform", "groups": ["team-platform"]},
            {"idp_group": "contractors", "groups": ["viewers"]},
        ]}});
        assert_eq!(
            patch(
                &[
                    "--max-ttl",
                    "8h",
                    "--allow-system-masters",
                    "false",
                    "--label",
                    "env=prod",
                    "--remove-label",
                    "tier",
                    "--allowed-group",
                    "team-*"
                ],
                current.clone()
            )
            .unwrap(),
            json!({"policy": {"max_ttl_seconds": 28800, "allow_system_masters": false,
                              "allowed_groups": ["team-*"]},
                   "labels": {"env": "prod", "tier": null}})
        );
        assert_eq!(
            patch(
                &[
                    "--access-rule",
                    "platform=team-platform,viewers,max-ttl=1h",
                    "--access-rule",
                    "sre=ops",
                    "--remove-access-rule",
                    "contractors"
                ],
                current.clone()
            )
            .unwrap(),
            json!({"policy": {"access_rules": [
                {"idp_group": "platform", "groups": ["team-platform", "viewers"], "max_ttl_seconds": 3600},
                {"idp_group": "sre", "groups": ["ops"]},
            ]}})
        );
        assert_eq!(
            patch(&["--clear", "access-rules", "--clear", "node-names"], current.clone()).unwrap(),
            json!({"policy": {"node_names": [], "access_rules": []}})
        );
        assert!(patch(&[], current.clone()).is_err());
        assert!(patch(&["--remove-access-rule", "nobody"], current.clone()).is_err());
        assert!(patch(&["--clear", "node-names", "--node-name", "n-*"], current).is_err());
        assert!(parse_access_rule("=x").is_err());
    }
}
