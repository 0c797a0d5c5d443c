//! User certificates (kubeconfigs): who may have which user and groups, for how long.

use std::time::Duration;

use super::{Refusal, check_token_max_ttl, privileged_needs_admin, token_allows_group};
use crate::names::{is_privileged_group, is_privileged_user, validate_identity};
use crate::policy::{IssuancePolicy, TTL_CEILING_SECONDS};
use crate::token::Claims;

/// What a user certificate request asks for.
#[derive(Debug, Clone)]
pub struct UserRequest<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
    pub ttl_seconds: Option<u64>,
}

/// Decide whether `claims` may have `request` issued under `policy`; answers the TTL to use.
///
/// A privileged identity (see `crate::policy`) is issued only when the policy names it exactly
/// and the token is an admin of the cluster (the caller checked the cluster): wildcards, in the
/// policy or in the token's own `groups`, never reach one.
pub fn decide_user_certificate(
    policy: &IssuancePolicy,
    claims: &Claims,
    request: &UserRequest<'_>,
) -> Result<Duration, Refusal> {
    validate_identity("user", request.user).map_err(|e| Refusal::invalid(e.field, e.detail))?;
    if is_privileged_user(request.user) {
        if !claims.is_admin() {
            return Err(privileged_needs_admin("user", request.user));
        }
        if !policy.allowed_privileged_users.iter().any(|u| u == request.user) {
            return Err(Refusal::policy(
                "allowed_privileged_users",
                "user",
                format!(
                    "user {:?} is reserved for Kubernetes components; this cluster's policy does not name it in allowed_privileged_users",
                    request.user
                ),
            ));
        }
    }
    for (i, group) in request.groups.iter().enumerate() {
        validate_identity(&format!("groups[{i}]"), group).map_err(|e| Refusal::invalid(e.field, e.detail))?;
        if request.groups[..i].contains(group) {
            return Err(Refusal::invalid(format!("groups[{i}]"), format!("group {group:?} is listed twice")));
        }
    }
    if request.groups.len() > policy.max_groups as usize {
        return Err(Refusal::policy(
            "max_groups",
            "groups",
            format!("at most {} groups may be issued in this cluster", policy.max_groups),
        ));
    }
    for (i, group) in request.groups.iter().enumerate() {
        let field = format!("groups[{i}]");
        if is_privileged_group(group) {
            if !claims.is_admin() {
                return Err(privileged_needs_admin(&field, group));
            }
            if !policy.names_privileged_group(group) {
                return Err(Refusal::policy(
                    "allowed_privileged_groups",
                    field,
                    format!(
                        "group {group:?} is privileged; this cluster's policy does not name it in allowed_privileged_groups"
                    ),
                ));
            }
        } else if !policy.allows_group(group) {
            return Err(Refusal::policy(
                "allowed_groups",
                field,
                format!("group {group:?} matches none of the cluster's allowed_groups"),
            ));
        }
        if !token_allows_group(claims, group) {
            return Err(Refusal::policy(
                "token_groups",
                format!("groups[{i}]"),
                format!("this token may not issue group {group:?}"),
            ));
        }
    }
    let ttl = request.ttl_seconds.unwrap_or(policy.default_ttl_seconds);
    if ttl == 0 || ttl > TTL_CEILING_SECONDS {
        return Err(Refusal::invalid("ttl_seconds", format!("must be between 1 and {TTL_CEILING_SECONDS}")));
    }
    if ttl < policy.min_ttl_seconds {
        return Err(Refusal::policy(
            "min_ttl_seconds",
            "ttl_seconds",
            format!("the TTL must be at least {} seconds in this cluster", policy.min_ttl_seconds),
        ));
    }
    if ttl > policy.max_ttl_seconds {
        return Err(Refusal::policy(
            "max_ttl_seconds",
            "ttl_seconds",
            format!("the TTL may be at most {} seconds in this cluster", policy.max_ttl_seconds),
        ));
    }
    check_token_max_ttl(claims, ttl)?;
    Ok(Duration::from_secs(ttl))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuance::test_claims as claims;
    use crate::token::Scope;

    fn decide(
        policy: &IssuancePolicy,
        claims: &Claims,
        groups: &[&str],
        ttl: Option<u64>,
    ) -> Result<Duration, Refusal> {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        decide_user_certificate(
            policy,
            claims,
            &UserRequest { user: "alice", groups: &groups, ttl_seconds: ttl },
        )
    }

    fn rule(result: Result<Duration, Refusal>) -> &'static str {
        match result {
            Err(Refusal::Policy { rule, .. }) => rule,
            other => panic!("expected a policy refusal, got {other:?}"),
        }
    }

    #[test]
    fn defaults_apply_and_every_rule_refuses() {
        let policy = IssuancePolicy::default();
        let issuer = claims(&[Scope::KubeconfigsIssue]);
        assert_eq!(decide(&policy, &issuer, &["dev"], None).unwrap(), Duration::from_secs(3600));
        assert_eq!(rule(decide(&policy, &issuer, &[], Some(30))), "min_ttl_seconds");
        assert_eq!(rule(decide(&policy, &issuer, &[], Some(86_401))), "max_ttl_seconds");
        let few = IssuancePolicy { max_groups: 1, ..Default::default() };
        assert_eq!(rule(decide(&few, &issuer, &["a", "b"], None)), "max_groups");
        let narrow = IssuancePolicy { allowed_groups: vec!["team-*".into()], ..Default::default() };
        assert!(decide(&narrow, &issuer, &["team-a"], None).is_ok());
        assert_eq!(rule(decide(&narrow, &issuer, &["ops"], None)), "allowed_groups");
        assert_eq!(rule(decide(&policy, &issuer, &["system:masters"], None)), "privileged_identity");
        let admin = claims(&[Scope::Admin]);
        assert_eq!(rule(decide(&policy, &admin, &["system:masters"], None)), "allowed_privileged_groups");
        let masters = IssuancePolicy { allow_system_masters: true, ..Default::default() };
        assert_eq!(rule(decide(&masters, &issuer, &["system:masters"], None)), "privileged_identity");
        assert!(decide(&masters, &admin, &["system:masters"], None).is_ok());
        let mut limited = issuer.clone();
        limited.groups = Some(vec!["dev".into()]);
        limited.max_ttl = Some(600);
        assert_eq!(rule(decide(&policy, &limited, &["ops"], Some(300))), "token_groups");
        assert_eq!(rule(decide(&policy, &limited, &["dev"], Some(900))), "token_max_ttl");
        assert!(decide(&policy, &limited, &["dev"], Some(600)).is_ok());
    }

    #[test]
    fn invalid_values_are_not_policy_refusals() {
        let policy = IssuancePolicy::default();
        let issuer = claims(&[Scope::KubeconfigsIssue]);
        for (groups, ttl) in
            [(vec!["a,b"], None), (vec!["dup", "dup"], None), (vec![" x"], None), (vec![], Some(0))]
        {
            assert!(
                matches!(decide(&policy, &issuer, &groups, ttl), Err(Refusal::Invalid { .. })),
                "{groups:?}"
            );
        }
        let request = UserRequest { user: "system:kube-proxy", groups: &[], ttl_seconds: None };
        assert!(matches!(
            decide_user_certificate(&policy, &issuer, &request),
            Err(Refusal::Policy { rule: "privileged_identity", .. })
        ));
        assert!(matches!(
            decide_user_certificate(&policy, &claims(&[Scope::Admin]), &request),
            Err(Refusal::Policy { rule: "allowed_privileged_users", .. })
        ));
    }

    #[test]
    fn privileged_groups_need_an_admin_and_a_policy_that_names_them() {
        let every =
            IssuancePolicy { allowed_groups: vec!["*".into(), "system:*".into()], ..Default::default() };
        let issuer = claims(&[Scope::KubeconfigsIssue]);
        let admin = claims(&[Scope::Admin]);
        for group in
            ["system:masters", "kubeadm:cluster-admins", "system:nodes", "system:kube-controller-manager"]
        {
            assert_eq!(rule(decide(&every, &issuer, &[group], None)), "privileged_identity", "{group}");
            assert_eq!(rule(decide(&every, &admin, &[group], None)), "allowed_privileged_groups", "{group}");
            let named =
                IssuancePolicy { allowed_privileged_groups: vec![group.into()], ..Default::default() };
            assert_eq!(rule(decide(&named, &issuer, &[group], None)), "privileged_identity", "{group}");
            assert!(decide(&named, &admin, &[group], None).is_ok(), "{group}");
            // An admin token narrowed to some groups reaches a privileged one only by its exact name.
            let mut narrowed = admin.clone();
            narrowed.groups = Some(vec!["*".into()]);
            assert_eq!(rule(decide(&named, &narrowed, &[group], None)), "token_groups", "{group}");
            narrowed.groups = Some(vec![group.into()]);
            assert!(decide(&named, &narrowed, &[group], None).is_ok(), "{group}");
        }
    }
}
