//! The issuance policy as the clusters row stores it (JSON): a format of its own, so that renaming
//! a field of the API never changes stored data, and rows written before a field existed read as
//! its default. A test pins the JSON.

use serde::{Deserialize, Serialize};

use crate::policy::{AccessRule, IssuancePolicy};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct StoredPolicy {
    default_ttl_seconds: u64,
    min_ttl_seconds: u64,
    max_ttl_seconds: u64,
    max_groups: u32,
    allowed_groups: Vec<String>,
    allow_system_masters: bool,
    allowed_privileged_groups: Vec<String>,
    allowed_privileged_users: Vec<String>,
    allowed_profiles: Vec<String>,
    component_max_ttl_seconds: u64,
    control_plane_names: Vec<String>,
    node_names: Vec<String>,
    access_rules: Vec<StoredAccessRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredAccessRule {
    idp_group: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    max_ttl_seconds: Option<u64>,
}

impl Default for StoredPolicy {
    fn default() -> Self {
        Self::from(&IssuancePolicy::default())
    }
}

impl From<&IssuancePolicy> for StoredPolicy {
    fn from(p: &IssuancePolicy) -> Self {
        Self {
            default_ttl_seconds: p.default_ttl_seconds,
            min_ttl_seconds: p.min_ttl_seconds,
            max_ttl_seconds: p.max_ttl_seconds,
            max_groups: p.max_groups,
            allowed_groups: p.allowed_groups.clone(),
            allow_system_masters: p.allow_system_masters,
            allowed_privileged_groups: p.allowed_privileged_groups.clone(),
            allowed_privileged_users: p.allowed_privileged_users.clone(),
            allowed_profiles: p.allowed_profiles.clone(),
            component_max_ttl_seconds: p.component_max_ttl_seconds,
            control_plane_names: p.control_plane_names.clone(),
            node_names: p.node_names.clone(),
            access_rules: p
                .access_rules
                .iter()
                .map(|r| StoredAccessRule {
                    idp_group: r.idp_group.clone(),
                    groups: r.groups.clone(),
                    max_ttl_seconds: r.max_ttl_seconds,
                })
                .collect(),
        }
    }
}

impl From<StoredPolicy> for IssuancePolicy {
    fn from(s: StoredPolicy) -> Self {
        Self {
            default_ttl_seconds: s.default_ttl_seconds,
            min_ttl_seconds: s.min_ttl_seconds,
            max_ttl_seconds: s.max_ttl_seconds,
            max_groups: s.max_groups,
            allowed_groups: s.allowed_groups,
            allow_system_masters: s.allow_system_masters,
            allowed_privileged_groups: s.allowed_privileged_groups,
            allowed_privileged_users: s.allowed_privileged_users,
            allowed_profiles: s.allowed_profiles,
            component_max_ttl_seconds: s.component_max_ttl_seconds,
            control_plane_names: s.control_plane_names,
            node_names: s.node_names,
            access_rules: s
                .access_rules
                .into_iter()
                .map(|r| AccessRule {
                    idp_group: r.idp_group,
                    groups: r.groups,
                    max_ttl_seconds: r.max_ttl_seconds,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored JSON is a contract with every database already written: changing it needs a
    /// migration, not an edit of the API.
    #[test]
    fn the_stored_json_is_pinned() {
        let stored = serde_json::to_string(&StoredPolicy::from(&IssuancePolicy::default())).unwrap();
        assert_eq!(
            stored,
            r#"{"default_ttl_seconds":3600,"min_ttl_seconds":60,"max_ttl_seconds":86400,"max_groups":16,"allowed_groups":["*"],"allow_system_masters":false,"allowed_privileged_groups":[],"allowed_privileged_users":[],"allowed_profiles":[],"component_max_ttl_seconds":31536000,"control_plane_names":[],"node_names":[],"access_rules":[]}"#
        );
    }

    /// Rows written by kca 0.1 (six fields) read with the defaults of the fields added since.
    #[test]
    fn rows_written_before_a_field_existed_read_its_default() {
        let old = r#"{"default_ttl_seconds":600,"min_ttl_seconds":60,"max_ttl_seconds":7200,"max_groups":4,"allowed_groups":["team-*"],"allow_system_masters":true}"#;
        let policy = IssuancePolicy::from(serde_json::from_str::<StoredPolicy>(old).unwrap());
        assert_eq!(
            policy,
            IssuancePolicy {
                default_ttl_seconds: 600,
                max_ttl_seconds: 7200,
                max_groups: 4,
                allowed_groups: vec!["team-*".into()],
                allow_system_masters: true,
                ..Default::default()
            }
        );
    }

    /// Access rules (single sign-on) have a stored form of their own, pinned too.
    #[test]
    fn access_rules_are_stored_in_a_pinned_form() {
        let policy = IssuancePolicy {
            access_rules: vec![AccessRule {
                idp_group: "platform".into(),
                groups: vec!["team-platform".into(), "viewers".into()],
                max_ttl_seconds: Some(28_800),
            }],
            ..Default::default()
        };
        let stored = serde_json::to_string(&StoredPolicy::from(&policy)).unwrap();
        assert!(
            stored.ends_with(
                r#","access_rules":[{"idp_group":"platform","groups":["team-platform","viewers"],"max_ttl_seconds":28800}]}"#
            ),
            "{stored}"
        );
        let back = IssuancePolicy::from(serde_json::from_str::<StoredPolicy>(&stored).unwrap());
        assert_eq!(back, policy);
    }
}
