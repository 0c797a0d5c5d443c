//! Issuing certificates: the policy decision for user kubeconfigs, and signing.
//!
//! Decisions are pure functions of the cluster policy, the token and the request, so every rule is
//! tested without a server.

use std::time::Duration;

use time::OffsetDateTime;

use crate::pki::ca::BACKDATE;
use crate::pki::csr::{CsrKeyType, verify_csr_pem};
use crate::pki::leaf::{ExtendedUsage, IssuedLeaf, LeafSpec, issue_leaf};
use crate::pki::{CaSigner, KeyAlgorithm, PkiError, Serial, SigningKeyPair, keys::private_key_pem};
use crate::policy::{
    FieldError, IssuancePolicy, TTL_CEILING_SECONDS, glob_match, is_privileged_group, is_privileged_user,
    validate_identity,
};
use crate::profiles::{ComponentRequest, DeclaredNames, Profile};
use crate::token::Claims;
#[cfg(test)]
use crate::token::Scope;

/// Why a request is refused: an invalid value (422) or a rule of the policy or token (403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Invalid { field: String, detail: String },
    Policy { rule: &'static str, field: String, detail: String },
}

impl Refusal {
    fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Refusal::Invalid { field: field.into(), detail: detail.into() }
    }

    fn policy(rule: &'static str, field: impl Into<String>, detail: impl Into<String>) -> Self {
        Refusal::Policy { rule, field: field.into(), detail: detail.into() }
    }
}

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

/// Decide whether `claims` may have a component certificate of `profile` issued under `policy`,
/// for a cluster that declared `names`; answers what goes into the certificate.
///
/// Every component profile is privileged: the token must be an admin of the cluster (the caller
/// checked the cluster), the policy must name the profile in `allowed_profiles`, serving names
/// must be declared, and the lifetime obeys `component_max_ttl_seconds` and the token's `max_ttl`.
pub fn decide_component(
    policy: &IssuancePolicy,
    claims: &Claims,
    profile: &Profile,
    request: &ComponentRequest,
    names: &DeclaredNames<'_>,
) -> Result<Usage, Refusal> {
    if !claims.is_admin() {
        return Err(Refusal::policy(
            "privileged_identity",
            "profile",
            format!(
                "the {} profile signs an identity the control plane trusts; only an admin token of this cluster may issue it",
                profile.name
            ),
        ));
    }
    if !policy.allowed_profiles.iter().any(|p| p == profile.name) {
        return Err(Refusal::policy(
            "allowed_profiles",
            "profile",
            format!("this cluster's policy does not name the {} profile in allowed_profiles", profile.name),
        ));
    }
    for group in profile.organizations {
        if !token_allows_group(claims, group) {
            return Err(Refusal::policy(
                "token_groups",
                "profile",
                format!(
                    "this token may not issue group {group:?}, which the {} profile carries",
                    profile.name
                ),
            ));
        }
    }
    let ceiling = profile.max_ttl_seconds.min(policy.component_max_ttl_seconds);
    let ttl = request.ttl_seconds.unwrap_or(profile.default_ttl_seconds.min(ceiling));
    if ttl == 0 || ttl > profile.max_ttl_seconds {
        return Err(Refusal::invalid(
            "ttl_seconds",
            format!("must be between 1 and {} for the {} profile", profile.max_ttl_seconds, profile.name),
        ));
    }
    if ttl > policy.component_max_ttl_seconds {
        return Err(Refusal::policy(
            "component_max_ttl_seconds",
            "ttl_seconds",
            format!(
                "component certificates may live at most {} seconds in this cluster",
                policy.component_max_ttl_seconds
            ),
        ));
    }
    check_token_max_ttl(claims, ttl)?;
    crate::profiles::resolve(profile, request, names, Duration::from_secs(ttl))
}

fn privileged_needs_admin(field: &str, identity: &str) -> Refusal {
    Refusal::policy(
        "privileged_identity",
        field,
        format!(
            "{identity:?} is a privileged Kubernetes identity; only an admin token of this cluster may issue it"
        ),
    )
}

/// The token's own `groups` narrow what it issues; for a privileged group only an exact entry
/// counts, never a wildcard.
fn token_allows_group(claims: &Claims, group: &str) -> bool {
    match &claims.groups {
        None => true,
        Some(patterns) if is_privileged_group(group) => patterns.iter().any(|p| p == group),
        Some(patterns) => patterns.iter().any(|p| glob_match(p, group)),
    }
}

fn check_token_max_ttl(claims: &Claims, ttl: u64) -> Result<(), Refusal> {
    match claims.max_ttl {
        Some(max) if ttl > max => Err(Refusal::policy(
            "token_max_ttl",
            "ttl_seconds",
            format!("this token may issue a TTL of at most {max} seconds"),
        )),
        _ => Ok(()),
    }
}

/// Where the subject's key comes from.
#[derive(Debug, Clone)]
pub enum SubjectKey {
    /// kca generates it.
    Generate(KeyAlgorithm),
    /// A PEM CSR; only its public key is used, after its signature is checked.
    Csr(String),
}

impl SubjectKey {
    /// The key a request asks for: its CSR's, or one kca generates (P-256 unless `key_algorithm`
    /// names another). An algorithm beside a CSR is refused: the CSR's key decides.
    pub fn from_request(
        csr_pem: Option<String>,
        key_algorithm: Option<KeyAlgorithm>,
    ) -> Result<Self, FieldError> {
        match (csr_pem, key_algorithm) {
            (Some(_), Some(_)) => {
                Err(FieldError::new("key_algorithm", "key_algorithm applies only when kca generates the key"))
            }
            (Some(csr), None) => Ok(SubjectKey::Csr(csr)),
            (None, algorithm) => Ok(SubjectKey::Generate(algorithm.unwrap_or_default())),
        }
    }
}

/// A signed certificate, with the key when kca made it.
pub struct Signed {
    pub serial: Serial,
    pub leaf: IssuedLeaf,
    pub private_key_pem: Option<zeroize::Zeroizing<String>>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// What goes into a certificate besides its key: subject, usages, names, lifetime.
#[derive(Debug, Clone)]
pub struct Usage {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub extended_usages: Vec<ExtendedUsage>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<std::net::IpAddr>,
    pub ttl: Duration,
}

impl Usage {
    /// A user's client certificate: CN the user, one O per group in order, clientAuth only.
    pub fn user(user: String, groups: Vec<String>, ttl: Duration) -> Self {
        Usage {
            common_name: user,
            organizations: groups,
            extended_usages: vec![ExtendedUsage::ClientAuth],
            dns_names: vec![],
            ip_addresses: vec![],
            ttl,
        }
    }
}

/// Sign a leaf now: notBefore backdated for clock skew, notAfter `ttl` from now, a fresh serial.
///
/// Handlers call it on their async worker: a key and a signature cost about 0.05 ms of CPU (P-384
/// a few times that), less than handing the work to the blocking pool and back.
pub fn sign(ca: &CaSigner, key: &SubjectKey, usage: &Usage, now: OffsetDateTime) -> Result<Signed, PkiError> {
    let (spki_der, private_key_pem, rsa) = match key {
        SubjectKey::Generate(algorithm) => {
            let (key, pkcs8) = SigningKeyPair::generate(*algorithm)?;
            (key.spki_der(), Some(private_key_pem(&pkcs8)), false)
        }
        SubjectKey::Csr(pem) => {
            let csr = verify_csr_pem(pem)?;
            (csr.spki_der, None, csr.key_type == CsrKeyType::Rsa)
        }
    };
    let now = now.replace_nanosecond(0).expect("0 is a valid nanosecond");
    let not_before = now - BACKDATE;
    let not_after = now + usage.ttl;
    // A certificate never outlives the CA that signs it.
    if not_after > ca.not_after() {
        return Err(PkiError::InvalidCertificate("the certificate would outlive its CA".into()));
    }
    let serial = Serial::random()?;
    let leaf = issue_leaf(
        ca,
        &LeafSpec {
            serial: &serial,
            common_name: &usage.common_name,
            organizations: &usage.organizations,
            spki_der: &spki_der,
            not_before,
            not_after,
            extended_usages: &usage.extended_usages,
            // RSA keys of TLS servers may be used for key exchange under TLS 1.2.
            key_encipherment: rsa && usage.extended_usages.contains(&ExtendedUsage::ServerAuth),
            dns_names: &usage.dns_names,
            ip_addresses: &usage.ip_addresses,
        },
    )?;
    Ok(Signed { serial, leaf, private_key_pem, not_before, not_after })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(scopes: &[Scope]) -> Claims {
        Claims {
            sub: "t".into(),
            iss: "kca".into(),
            aud: "kca".into(),
            exp: 0,
            iat: 0,
            nbf: None,
            jti: "j".into(),
            scopes: scopes.to_vec(),
            clusters: vec!["*".into()],
            groups: None,
            max_ttl: None,
        }
    }

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

    #[test]
    fn component_profiles_are_privileged() {
        let (cp, nodes) = (vec!["etcd-0".to_string()], vec!["worker-*".to_string()]);
        let names = DeclaredNames { server_host: None, control_plane_names: &cp, node_names: &nodes };
        let all = IssuancePolicy {
            allowed_profiles: crate::profiles::profiles().iter().map(|p| p.name.to_string()).collect(),
            ..Default::default()
        };
        for profile in crate::profiles::profiles() {
            let request = ComponentRequest {
                common_name: matches!(profile.common_name, crate::profiles::CommonNameRule::Node)
                    .then(|| "system:node:worker-1".to_string()),
                dns_names: match profile.subject_alt_names {
                    crate::profiles::SanRule::Required
                        if profile.authority == crate::pki::AuthorityKind::Kubelet =>
                    {
                        vec!["worker-1".into()]
                    }
                    crate::profiles::SanRule::Required => vec!["etcd-0".into()],
                    _ => vec![],
                },
                ..Default::default()
            };
            let refused = |policy: &IssuancePolicy, claims: &Claims| match decide_component(
                policy, claims, &profile, &request, &names,
            ) {
                Err(Refusal::Policy { rule, .. }) => rule,
                other => panic!("{}: expected a refusal, got {other:?}", profile.name),
            };
            for scope in [Scope::CertificatesIssue, Scope::KubeconfigsIssue, Scope::ClustersWrite] {
                assert_eq!(refused(&all, &claims(&[scope])), "privileged_identity", "{}", profile.name);
            }
            let admin = claims(&[Scope::Admin]);
            assert_eq!(refused(&IssuancePolicy::default(), &admin), "allowed_profiles", "{}", profile.name);
            let usage = decide_component(&all, &admin, &profile, &request, &names).unwrap();
            assert_eq!(usage.ttl, Duration::from_secs(365 * 24 * 3600), "{}", profile.name);
            let short = IssuancePolicy { component_max_ttl_seconds: 3600, ..all.clone() };
            assert_eq!(
                decide_component(&short, &admin, &profile, &request, &names).unwrap().ttl.as_secs(),
                3600
            );
            let long = ComponentRequest { ttl_seconds: Some(7200), ..request.clone() };
            assert!(matches!(
                decide_component(&short, &admin, &profile, &long, &names),
                Err(Refusal::Policy { rule: "component_max_ttl_seconds", .. })
            ));
            let mut limited = admin.clone();
            limited.max_ttl = Some(600);
            assert!(matches!(
                decide_component(&all, &limited, &profile, &long, &names),
                Err(Refusal::Policy { rule: "token_max_ttl", .. })
            ));
        }
    }
}
