//! Issuance policy of a cluster, which identities are privileged, and the validation of user and
//! group names.

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
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
        }
    }
}

/// A rule broken: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub detail: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { field: field.into(), detail: detail.into() }
    }
}

/// A group Kubernetes itself gives meaning to: `system:…` (`system:masters` bypasses RBAC,
/// `system:nodes` are kubelets) and `kubeadm:…` (`kubeadm:cluster-admins`). Compared without
/// regard to ASCII case, so that a look-alike is treated like the real thing.
pub fn is_privileged_group(group: &str) -> bool {
    has_prefix_ignoring_case(group, "system:") || has_prefix_ignoring_case(group, "kubeadm:")
}

/// A user name Kubernetes reserves for its components (`system:kube-scheduler`,
/// `system:node:<name>`, …).
pub fn is_privileged_user(user: &str) -> bool {
    has_prefix_ignoring_case(user, "system:")
}

fn has_prefix_ignoring_case(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix))
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
        } else {
            None
        }
    }
}

/// A DNS name: labels of letters, digits and `-` (no wildcard).
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `*` matches any run of characters, `?` exactly one; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            backtrack = Some((p, t));
            p += 1;
        } else if let Some((star, matched)) = backtrack {
            p = star + 1;
            t = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// A user (CN) or group (O) string: 1-64 characters, printable, no control characters, no commas,
/// no leading or trailing space. They become HTTP header values at the proxy, and names in RBAC
/// bindings: look-alikes are refused (invisible characters, colons that are not `:`, anything
/// that NFKC normalisation would change), so that `system:masters` can only be spelled one way.
pub fn validate_identity(field: &str, value: &str) -> Result<(), FieldError> {
    let len = value.chars().count();
    if len == 0 || len > 64 {
        return Err(FieldError::new(field, "must be 1-64 characters"));
    }
    // Control characters, and whitespace other than the plain space (tabs, line and paragraph
    // separators, no-break spaces), would make ambiguous header values at the proxy.
    if value.chars().any(|c| c.is_control() || (c.is_whitespace() && c != ' ')) {
        return Err(FieldError::new(
            field,
            "must not contain control characters or whitespace other than spaces",
        ));
    }
    if let Some(c) = value.chars().find(|c| is_invisible(*c)) {
        return Err(FieldError::new(
            field,
            format!("must not contain invisible or formatting characters (U+{:04X})", u32::from(c)),
        ));
    }
    if let Some(c) = value.chars().find(|c| CONFUSABLE_COLONS.contains(c)) {
        return Err(FieldError::new(
            field,
            format!("must not contain U+{:04X}, which looks like ':'; use ':' itself", u32::from(c)),
        ));
    }
    if !value.chars().eq(value.nfkc()) {
        return Err(FieldError::new(
            field,
            "must be in Unicode NFKC normal form (no full-width, compatibility or look-alike forms)",
        ));
    }
    if value.contains(',') {
        return Err(FieldError::new(field, "must not contain commas"));
    }
    if value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
        return Err(FieldError::new(field, "must not start or end with whitespace"));
    }
    Ok(())
}

/// Characters that look like `:` but are not, and that NFKC leaves alone (those it folds, such as
/// the full-width colon, are refused by the NFKC check).
const CONFUSABLE_COLONS: &[char] = &[
    '\u{02D0}', '\u{02F8}', '\u{0589}', '\u{05C3}', '\u{0703}', '\u{0704}', '\u{0F14}', '\u{16EC}',
    '\u{1803}', '\u{1809}', '\u{1361}', '\u{205A}', '\u{2236}', '\u{A4FD}', '\u{A789}', '\u{FE30}',
];

/// Unicode default-ignorable code points and format (Cf) characters: they render as nothing, so
/// two different names would look the same.
fn is_invisible(c: char) -> bool {
    matches!(u32::from(c),
        0x00AD | 0x034F | 0x061C | 0x0600..=0x0605 | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2
        | 0x115F..=0x1160 | 0x17B4..=0x17B5 | 0x180B..=0x180F | 0x200B..=0x200F | 0x202A..=0x202E
        | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFFB
        | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
        | 0xE0000..=0xE0FFF)
}

/// A cluster name: an RFC 1123 DNS label (lowercase letters, digits and `-`, at most 63 characters,
/// starting and ending with a letter or digit).
pub fn validate_cluster_name(name: &str) -> Result<(), FieldError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "name",
            "must be a DNS label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("team-*", "team-a"));
        assert!(!glob_match("team-*", "teams"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("*:viewers", "system:viewers"));
        assert!(!glob_match("dev", "devops"));
        assert!(glob_match("*a*b", "xxaxxb"));
    }

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
    fn look_alike_identities_are_refused() {
        for bad in [
            "system\u{FF1A}masters",  // full-width colon (NFKC folds it)
            "system\u{2236}masters",  // ratio
            "system\u{A789}masters",  // modifier letter colon
            "system:\u{200B}masters", // zero-width space
            "sys\u{00AD}tem:masters", // soft hyphen
            "\u{FEFF}alice",          // byte order mark
            "alice\u{E0041}",         // tag character
            "\u{FF41}lice",           // full-width a
            "e\u{0301}",              // decomposed é: NFKC composes it
        ] {
            assert!(validate_identity("user", bad).is_err(), "{bad:?}");
        }
        for good in ["alice", "system:masters", "j\u{00E9}r\u{00F4}me", "\u{7530}\u{4E2D}"] {
            assert!(validate_identity("user", good).is_ok(), "{good:?}");
        }
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
    fn identities_are_header_safe() {
        assert!(validate_identity("user", "alice").is_ok());
        assert!(validate_identity("user", "system:node:worker-1").is_ok());
        for bad in ["", " alice", "alice ", "a,b", "a\nb", "a\u{2028}b", "a\tb", "a\u{a0}b", &"x".repeat(65)]
        {
            assert!(validate_identity("user", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cluster_names_are_dns_labels() {
        assert!(validate_cluster_name("prod-1").is_ok());
        for bad in ["", "-a", "a-", "Prod", "a_b", &"a".repeat(64)] {
            assert!(validate_cluster_name(bad).is_err(), "{bad:?}");
        }
    }
}
