//! Issuance policy of a cluster, and the validation of user and group names.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The most groups any certificate may carry: the proxy needs one header rule per O position.
pub const GROUPS_CEILING: u32 = 32;
/// The longest TTL any policy may allow for a user certificate (one year).
pub const TTL_CEILING_SECONDS: u64 = 366 * 24 * 3600;
/// The group that bypasses Kubernetes RBAC entirely.
pub const SYSTEM_MASTERS: &str = "system:masters";

/// How a cluster's user certificates may be issued. Part of the cluster object, editable by PATCH.
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
    /// Glob patterns (`*`, `?`) a requested group must match one of.
    pub allowed_groups: Vec<String>,
    /// Whether `system:masters` may be issued at all; even then only to an `admin` token.
    pub allow_system_masters: bool,
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
        if self.allowed_groups.len() > 64 {
            return Err(FieldError::new(field("allowed_groups"), "at most 64 patterns"));
        }
        for pattern in &self.allowed_groups {
            if pattern.is_empty() || pattern.chars().count() > 128 || pattern.chars().any(char::is_control) {
                return Err(FieldError::new(
                    field("allowed_groups"),
                    "each pattern is 1-128 printable characters",
                ));
            }
        }
        Ok(())
    }

    /// Whether `group` matches one of the allowed patterns.
    pub fn allows_group(&self, group: &str) -> bool {
        self.allowed_groups.iter().any(|pattern| glob_match(pattern, group))
    }
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
/// no leading or trailing space. They become HTTP header values at the proxy.
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
    if value.contains(',') {
        return Err(FieldError::new(field, "must not contain commas"));
    }
    if value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
        return Err(FieldError::new(field, "must not start or end with whitespace"));
    }
    Ok(())
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
