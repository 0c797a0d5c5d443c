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
    FieldError, IssuancePolicy, SYSTEM_MASTERS, TTL_CEILING_SECONDS, glob_match, validate_identity,
};
use crate::token::{Claims, Scope};

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
pub fn decide_user_certificate(
    policy: &IssuancePolicy,
    claims: &Claims,
    request: &UserRequest<'_>,
) -> Result<Duration, Refusal> {
    validate_identity("user", request.user).map_err(|e| Refusal::invalid(e.field, e.detail))?;
    if request.user.starts_with("system:") && !claims.has_scope(Scope::Admin) {
        return Err(Refusal::policy(
            "reserved_user",
            "user",
            "users with the system: prefix are reserved for Kubernetes components; only an admin token may issue them",
        ));
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
        if group == SYSTEM_MASTERS {
            if !policy.allow_system_masters {
                return Err(Refusal::policy(
                    "allow_system_masters",
                    field,
                    "this cluster's policy does not allow issuing system:masters",
                ));
            }
            if !claims.has_scope(Scope::Admin) {
                return Err(Refusal::policy(
                    "allow_system_masters",
                    field,
                    "issuing system:masters needs a token with the admin scope",
                ));
            }
        } else if !policy.allows_group(group) {
            return Err(Refusal::policy(
                "allowed_groups",
                field,
                format!("group {group:?} matches none of the cluster's allowed_groups"),
            ));
        }
        if let Some(patterns) = &claims.groups
            && !patterns.iter().any(|p| glob_match(p, group))
        {
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
    if let Some(max) = claims.max_ttl
        && ttl > max
    {
        return Err(Refusal::policy(
            "token_max_ttl",
            "ttl_seconds",
            format!("this token may issue a TTL of at most {max} seconds"),
        ));
    }
    Ok(Duration::from_secs(ttl))
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
        assert_eq!(rule(decide(&policy, &issuer, &["system:masters"], None)), "allow_system_masters");
        let masters = IssuancePolicy { allow_system_masters: true, ..Default::default() };
        assert_eq!(rule(decide(&masters, &issuer, &["system:masters"], None)), "allow_system_masters");
        assert!(decide(&masters, &claims(&[Scope::Admin]), &["system:masters"], None).is_ok());
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
            Err(Refusal::Policy { rule: "reserved_user", .. })
        ));
    }
}
