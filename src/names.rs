//! The names a certificate carries and the rules they follow: users (CN) and groups (O), which of
//! them are privileged, DNS names and the globs that match them, cluster names.
//!
//! Pure functions with no dependency inside kca, so every other rule can build on them.

use unicode_normalization::UnicodeNormalization;

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
