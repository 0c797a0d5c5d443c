//! The issuance policy of a cluster: TTL bounds, the groups it allows, the privileged identities
//! and component profiles it names, and the names it declares.

use serde::{Deserialize, Serialize};

use crate::names::{
    FieldError, glob_match, is_dns_name, is_privileged_group, is_privileged_user, validate_identity,
};
use utoipa::ToSchema;

/// The most groups any certificate may carry: the proxy needs one header rule per O position.
pub const GROUPS_CEILING: u32 = 32;
/// The longest TTL any policy may allow for a user certificate (one year).
pub const TTL_CEILING_SECONDS: u64 = 366 * 24 * 3600;
/// The longest TTL any policy may allow for a component certificate (two years, the longest any
/// component profile allows).
pub const COMPONENT_TTL_CEILING_SECONDS: u64 = 2 * 365 * 24 * 3600;
/// The group that bypasses Kubernetes RBAC entirely.
pub const SYSTEM_MASTERS: &str = "system:masters";
/// Most entries in each list of the policy.
const LIST_CEILING: usize = 64;

/// How a cluster's certificates may be issued. Part of the cluster object, editable by PATCH.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct IssuancePolicy {
    /// TTL when a request gives none.
    pub default_ttl_seconds: u64,
    /// Shortest TTL a request may ask for.
    pub min_ttl_seconds: u64,
    /// Longest TTL a request may ask for.
    pub max_ttl_seconds: u64,
    /// Most groups (O entries) in one certificate.
    pub max_groups: u32,
    /// Glob patterns (`*`, `?`) a requested group must match one of. They never match a
    /// privileged group (`system:…`, `kubeadm:…`): those are named in `allowed_privileged_groups`.
    pub allowed_groups: Vec<String>,
    /// Whether `system:masters` may be issued (to an admin token); the same as naming it in
    /// `allowed_privileged_groups`.
    pub allow_system_masters: bool,
    /// Privileged groups (`system:…`, `kubeadm:…`) that may be issued, by exact name, and only to
    /// an admin token of this cluster. Changing it needs an admin token.
    pub allowed_privileged_groups: Vec<String>,
    /// Privileged users (CNs starting with `system:`) that may be issued, by exact name, and only
    /// to an admin token of this cluster. Changing it needs an admin token.
    pub allowed_privileged_users: Vec<String>,
    /// Component certificate profiles (`GET /v1/profiles`) that may be issued, and only to an
    /// admin token of this cluster: every component profile is privileged. Changing it needs an
    /// admin token.
    pub allowed_profiles: Vec<String>,
    /// Longest TTL of a component certificate.
    pub component_max_ttl_seconds: u64,
    /// DNS names and IP addresses (exact) that serving certificates of the control plane
    /// (`apiserver`, `etcd-server`, `etcd-peer`) may carry, besides the `server` URL's host and
    /// each profile's implied names.
    pub control_plane_names: Vec<String>,
    /// Glob patterns of node names (and kubelet serving SANs): they bound `system:node:<name>`.
    pub node_names: Vec<String>,
    /// What people signed in through single sign-on may be issued, by their groups at the
    /// identity provider. A person matching no rule does not see the cluster. Changing it needs
    /// an admin token.
    pub access_rules: Vec<AccessRule>,
}

/// One access rule: members of `idp_group` at the identity provider may have kubeconfigs for
/// themselves with some of `groups`, for at most `max_ttl_seconds`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// A group as the identity provider's groups claim names it (exact match).
    #[schema(example = "platform")]
    pub idp_group: String,
    /// The Kubernetes groups (O entries) its members may have; none privileged.
    #[serde(default)]
    #[schema(example = json!(["team-platform", "viewers"]))]
    pub groups: Vec<String>,
    /// Longest TTL its members may have (the policy's `max_ttl_seconds` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, example = 28800)]
    pub max_ttl_seconds: Option<u64>,
}

impl Default for IssuancePolicy {
    fn default() -> Self {
        Self {
            default_ttl_seconds: 3600,
            min_ttl_seconds: 60,
            max_ttl_seconds: 86_400,
            max_groups: 16,
            allowed_groups: vec!["*".into()],
            allow_system_masters: false,
            allowed_privileged_groups: Vec::new(),
            allowed_privileged_users: Vec::new(),
            allowed_profiles: Vec::new(),
            component_max_ttl_seconds: 365 * 24 * 3600,
            control_plane_names: Vec::new(),
            node_names: Vec::new(),
            access_rules: Vec::new(),
        }
    }
}

impl IssuancePolicy {
    /// Check the policy is coherent before it is stored.
    pub fn validate(&self) -> Result<(), FieldError> {
        let field = |name: &str| format!("policy.{name}");
        if self.min_ttl_seconds == 0 {
            return Err(FieldError::new(field("min_ttl_seconds"), "must be at least 1"));
        }
        if self.max_ttl_seconds > TTL_CEILING_SECONDS {
            return Err(FieldError::new(
                field("max_ttl_seconds"),
                format!("must be at most {TTL_CEILING_SECONDS} (366 days)"),
            ));
        }
        if self.min_ttl_seconds > self.max_ttl_seconds {
            return Err(FieldError::new(field("min_ttl_seconds"), "must not exceed max_ttl_seconds"));
        }
        if !(self.min_ttl_seconds..=self.max_ttl_seconds).contains(&self.default_ttl_seconds) {
            return Err(FieldError::new(
                field("default_ttl_seconds"),
                "must lie between min_ttl_seconds and max_ttl_seconds",
            ));
        }
        if self.max_groups > GROUPS_CEILING {
            return Err(FieldError::new(field("max_groups"), format!("must be at most {GROUPS_CEILING}")));
        }
        if !(1..=COMPONENT_TTL_CEILING_SECONDS).contains(&self.component_max_ttl_seconds) {
            return Err(FieldError::new(
                field("component_max_ttl_seconds"),
                format!("must be between 1 and {COMPONENT_TTL_CEILING_SECONDS} (two years)"),
            ));
        }
        for (name, list) in [
            ("allowed_groups", &self.allowed_groups),
            ("allowed_privileged_groups", &self.allowed_privileged_groups),
            ("allowed_privileged_users", &self.allowed_privileged_users),
            ("allowed_profiles", &self.allowed_profiles),
            ("control_plane_names", &self.control_plane_names),
            ("node_names", &self.node_names),
        ] {
            if list.len() > LIST_CEILING {
                return Err(FieldError::new(field(name), format!("at most {LIST_CEILING} entries")));
            }
        }
        for pattern in &self.allowed_groups {
            if pattern.is_empty() || pattern.chars().count() > 128 || pattern.chars().any(char::is_control) {
                return Err(FieldError::new(
                    field("allowed_groups"),
                    "each pattern is 1-128 printable characters",
                ));
            }
        }
        for (i, group) in self.allowed_privileged_groups.iter().enumerate() {
            let at = field(&format!("allowed_privileged_groups[{i}]"));
            validate_identity(&at, group)?;
            if !is_privileged_group(group) {
                return Err(FieldError::new(
                    at,
                    format!("{group:?} is not privileged (system: or kubeadm:); list it in allowed_groups"),
                ));
            }
        }
        for (i, user) in self.allowed_privileged_users.iter().enumerate() {
            let at = field(&format!("allowed_privileged_users[{i}]"));
            validate_identity(&at, user)?;
            if !is_privileged_user(user) {
                return Err(FieldError::new(at, format!("{user:?} is not privileged (system:)")));
            }
        }
        for (i, name) in self.allowed_profiles.iter().enumerate() {
            if crate::profiles::find(name).is_none() {
                return Err(FieldError::new(
                    field(&format!("allowed_profiles[{i}]")),
                    format!("no profile {name:?} (see GET /v1/profiles)"),
                ));
            }
        }
        for (i, name) in self.control_plane_names.iter().enumerate() {
            if name.parse::<std::net::IpAddr>().is_err() && !is_dns_name(name) {
                return Err(FieldError::new(
                    field(&format!("control_plane_names[{i}]")),
                    format!("{name:?} is neither a DNS name nor an IP address (no wildcards)"),
                ));
            }
        }
        if self.access_rules.len() > LIST_CEILING {
            return Err(FieldError::new(field("access_rules"), format!("at most {LIST_CEILING} entries")));
        }
        for (i, rule) in self.access_rules.iter().enumerate() {
            let at = |name: &str| field(&format!("access_rules[{i}].{name}"));
            let g = &rule.idp_group;
            if g.is_empty() || g.chars().count() > 256 || g.chars().any(char::is_control) {
                return Err(FieldError::new(at("idp_group"), "1-256 printable characters"));
            }
            if rule.groups.len() > self.max_groups as usize {
                return Err(FieldError::new(
                    at("groups"),
                    format!("at most max_groups ({}) groups", self.max_groups),
                ));
            }
            for (j, group) in rule.groups.iter().enumerate() {
                let at = field(&format!("access_rules[{i}].groups[{j}]"));
                validate_identity(&at, group)?;
                // Only an admin token obtains a privileged group; a person never does.
                if is_privileged_group(group) {
                    return Err(FieldError::new(
                        at,
                        format!(
                            "{group:?} is privileged: people signed in through single sign-on never obtain it"
                        ),
                    ));
                }
                if !self.allows_group(group) {
                    return Err(FieldError::new(at, format!("{group:?} matches none of allowed_groups")));
                }
                if rule.groups[..j].contains(group) {
                    return Err(FieldError::new(at, format!("{group:?} is listed twice")));
                }
            }
            if let Some(ttl) = rule.max_ttl_seconds
                && !(1..=self.max_ttl_seconds).contains(&ttl)
            {
                return Err(FieldError::new(
                    at("max_ttl_seconds"),
                    format!("must be between 1 and the policy's max_ttl_seconds ({})", self.max_ttl_seconds),
                ));
            }
        }
        for (i, pattern) in self.node_names.iter().enumerate() {
            let ok = !pattern.is_empty()
                && pattern.len() <= 253
                && pattern.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:*?".contains(&b));
            if !ok {
                return Err(FieldError::new(
                    field(&format!("node_names[{i}]")),
                    "each pattern is 1-253 characters of letters, digits, '-', '.', ':', '*' or '?'",
                ));
            }
        }
        Ok(())
    }

    /// Whether an unprivileged `group` matches one of the allowed patterns. Privileged groups
    /// never match a pattern.
    pub fn allows_group(&self, group: &str) -> bool {
        !is_privileged_group(group) && self.allowed_groups.iter().any(|pattern| glob_match(pattern, group))
    }

    /// Whether the policy names the privileged `group`.
    pub fn names_privileged_group(&self, group: &str) -> bool {
        self.allowed_privileged_groups.iter().any(|g| g == group)
            || (group == SYSTEM_MASTERS && self.allow_system_masters)
    }

    /// The fields only an admin may change: they decide who may obtain a privileged identity.
    pub fn privileged_fields_differ(&self, other: &IssuancePolicy) -> Option<&'static str> {
        if self.allow_system_masters != other.allow_system_masters {
            Some("allow_system_masters")
        } else if self.allowed_privileged_groups != other.allowed_privileged_groups {
            Some("allowed_privileged_groups")
        } else if self.allowed_privileged_users != other.allowed_privileged_users {
            Some("allowed_privileged_users")
        } else if self.allowed_profiles != other.allowed_profiles {
            Some("allowed_profiles")
        } else if self.access_rules != other.access_rules {
            Some("access_rules")
        } else {
            None
        }
    }
}

/// What a person may be issued in a cluster, and by which rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant<'a> {
    pub rule: &'a AccessRule,
    /// The groups the certificate gets.
    pub groups: Vec<String>,
    /// The longest TTL.
    pub max_ttl_seconds: u64,
}

impl IssuancePolicy {
    /// Whether a person with these identity-provider groups sees the cluster at all.
    pub fn admits(&self, idp_groups: &[String]) -> bool {
        self.access_rules.iter().any(|rule| idp_groups.contains(&rule.idp_group))
    }

    /// The rule a person's certificate comes from: the first rule matching one of `idp_groups`
    /// that grants every group asked for. With none asked, the first matching rule's groups.
    pub fn grant(&self, idp_groups: &[String], requested: &[String]) -> Option<Grant<'_>> {
        let rule = self
            .access_rules
            .iter()
            .filter(|rule| idp_groups.contains(&rule.idp_group))
            .find(|rule| requested.iter().all(|g| rule.groups.contains(g)))?;
        let groups = if requested.is_empty() { rule.groups.clone() } else { requested.to_vec() };
        let max_ttl_seconds = rule.max_ttl_seconds.unwrap_or(self.max_ttl_seconds).min(self.max_ttl_seconds);
        Some(Grant { rule, groups, max_ttl_seconds })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_valid_and_incoherent_ones_are_not() {
        assert!(IssuancePolicy::default().validate().is_ok());
        let bad = IssuancePolicy { min_ttl_seconds: 100, default_ttl_seconds: 50, ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().field, "policy.default_ttl_seconds");
        let bad = IssuancePolicy { max_groups: 100, ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().field, "policy.max_groups");
    }

    #[test]
    fn privileged_identities_have_one_definition() {
        for group in
            ["system:masters", "system:nodes", "kubeadm:cluster-admins", "System:Masters", "KUBEADM:x"]
        {
            assert!(is_privileged_group(group), "{group}");
        }
        for group in ["dev", "systems:x", "kubeadmins", "x:system:masters"] {
            assert!(!is_privileged_group(group), "{group}");
        }
        assert!(is_privileged_user("system:kube-proxy"));
        assert!(is_privileged_user("system:node:worker-1"));
        assert!(!is_privileged_user("kubeadm:alice"));
        let policy = IssuancePolicy::default();
        assert!(policy.allows_group("dev"));
        assert!(!policy.allows_group("system:nodes"), "wildcards never match a privileged group");
        assert!(!policy.allows_group("kubeadm:cluster-admins"));
        assert!(!policy.names_privileged_group(SYSTEM_MASTERS));
        let masters = IssuancePolicy { allow_system_masters: true, ..Default::default() };
        assert!(masters.names_privileged_group(SYSTEM_MASTERS));
    }

    #[test]
    fn privileged_policy_entries_must_be_privileged_and_exact() {
        let bad = IssuancePolicy { allowed_privileged_groups: vec!["dev".into()], ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().field, "policy.allowed_privileged_groups[0]");
        let bad = IssuancePolicy { allowed_profiles: vec!["root".into()], ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().field, "policy.allowed_profiles[0]");
        let bad = IssuancePolicy { control_plane_names: vec!["*.example.com".into()], ..Default::default() };
        assert_eq!(bad.validate().unwrap_err().field, "policy.control_plane_names[0]");
        let good = IssuancePolicy {
            allowed_privileged_groups: vec!["system:masters".into()],
            allowed_privileged_users: vec!["system:kube-proxy".into()],
            allowed_profiles: vec!["etcd-peer".into()],
            control_plane_names: vec!["10.0.0.1".into(), "api.example.com".into()],
            node_names: vec!["worker-*".into()],
            ..Default::default()
        };
        assert!(good.validate().is_ok());
        assert_eq!(
            good.privileged_fields_differ(&IssuancePolicy::default()),
            Some("allowed_privileged_groups")
        );
    }

    #[test]
    fn access_rules_grant_from_the_first_matching_rule_and_never_privileged_groups() {
        let rule = |idp: &str, groups: &[&str], ttl: Option<u64>| AccessRule {
            idp_group: idp.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            max_ttl_seconds: ttl,
        };
        let policy = IssuancePolicy {
            access_rules: vec![
                rule("platform", &["team-platform", "viewers"], Some(28_800)),
                rule("dev", &["viewers"], None),
            ],
            ..Default::default()
        };
        assert!(policy.validate().is_ok());
        let groups = |list: &[&str]| list.iter().map(|g| g.to_string()).collect::<Vec<_>>();
        assert!(policy.admits(&groups(&["dev"])));
        assert!(!policy.admits(&groups(&["sales"])));
        let grant = policy.grant(&groups(&["platform"]), &[]).unwrap();
        assert_eq!(grant.groups, ["team-platform", "viewers"]);
        assert_eq!(grant.max_ttl_seconds, 28_800);
        let grant = policy.grant(&groups(&["dev"]), &groups(&["viewers"])).unwrap();
        assert_eq!((grant.rule.idp_group.as_str(), grant.max_ttl_seconds), ("dev", 86_400));
        assert!(policy.grant(&groups(&["dev"]), &groups(&["team-platform"])).is_none());
        assert!(policy.grant(&groups(&["sales"]), &[]).is_none());

        let privileged = IssuancePolicy {
            access_rules: vec![rule("admins", &["system:masters"], None)],
            allowed_privileged_groups: vec!["system:masters".into()],
            ..Default::default()
        };
        assert_eq!(privileged.validate().unwrap_err().field, "policy.access_rules[0].groups[0]");
        let long =
            IssuancePolicy { access_rules: vec![rule("dev", &[], Some(86_401))], ..Default::default() };
        assert_eq!(long.validate().unwrap_err().field, "policy.access_rules[0].max_ttl_seconds");
        assert_eq!(
            policy.privileged_fields_differ(&IssuancePolicy::default()),
            Some("access_rules"),
            "only an admin changes who may sign in"
        );
    }
}
