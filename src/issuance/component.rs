//! Component certificates: every profile is privileged, carries only names the cluster declared,
//! and lives no longer than the cluster's policy and the token allow.

use std::net::IpAddr;
use std::time::Duration;

use super::{Refusal, Usage, check_token_max_ttl, token_allows_group};
use crate::names::{glob_match, is_dns_name, validate_identity};
use crate::pki::AuthorityKind;
use crate::policy::{IssuancePolicy, SYSTEM_MASTERS};
use crate::profiles::{CommonNameRule, Profile, SanRule};
use crate::token::Claims;

/// The `apiserver` profile's defaults, kubeadm's: always allowed, being the cluster's own names.
const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
const DEFAULT_SERVICE_IP: &str = "10.96.0.1";

/// What a component certificate request asks for.
#[derive(Debug, Clone, Default)]
pub struct ComponentRequest {
    pub common_name: Option<String>,
    pub organizations: Option<Vec<String>>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<String>,
    pub ttl_seconds: Option<u64>,
    /// apiserver only: the cluster DNS domain (default `cluster.local`).
    pub cluster_domain: Option<String>,
    /// apiserver only: the `kubernetes` service IP (default `10.96.0.1`).
    pub service_ip: Option<String>,
}

/// The names a cluster declared: what its serving certificates and node identities may carry.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeclaredNames<'a> {
    /// The host of the cluster's `server` URL.
    pub server_host: Option<&'a str>,
    /// The policy's `control_plane_names` (exact DNS names and IP addresses).
    pub control_plane_names: &'a [String],
    /// The policy's `node_names` (glob patterns).
    pub node_names: &'a [String],
}

impl DeclaredNames<'_> {
    fn control_plane(&self, name: &str) -> bool {
        let same = |declared: &str| match (declared.parse::<IpAddr>(), name.parse::<IpAddr>()) {
            (Ok(a), Ok(b)) => a == b,
            _ => declared.eq_ignore_ascii_case(name),
        };
        self.server_host.map(|h| h.trim_start_matches('[').trim_end_matches(']')).is_some_and(same)
            || self.control_plane_names.iter().any(|declared| same(declared))
    }

    fn node(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.node_names.iter().any(|pattern| glob_match(&pattern.to_ascii_lowercase(), &name))
    }
}

/// Check a request against a profile and the names the cluster declared, and work out the
/// certificate's subject, names and TTL (`ttl` decided by the caller's policy).
fn resolve(
    profile: &Profile,
    request: &ComponentRequest,
    declared: &DeclaredNames<'_>,
    ttl: Duration,
) -> Result<Usage, Refusal> {
    let undeclared = |field: &str, detail: String| Refusal::Policy {
        rule: "declared_names",
        field: field.to_string(),
        detail,
    };
    let invalid = |field: &str, detail: String| Refusal::Invalid { field: field.to_string(), detail };
    let common_name = match (profile.common_name, &request.common_name) {
        (CommonNameRule::Fixed(fixed), Some(given)) if given != fixed => {
            return Err(invalid(
                "common_name",
                format!("the {} profile's CN is always {fixed:?}", profile.name),
            ));
        }
        (CommonNameRule::Fixed(fixed), _) => fixed.to_string(),
        (CommonNameRule::Default(default), None) => default.to_string(),
        (CommonNameRule::Default(_), Some(given)) => given.clone(),
        (CommonNameRule::Node, None) => {
            return Err(invalid("common_name", "required: system:node:<node name>".into()));
        }
        (CommonNameRule::Node, Some(given)) => {
            let node = given.strip_prefix("system:node:").unwrap_or_default();
            if node.is_empty() || !is_dns_name(node) {
                return Err(invalid(
                    "common_name",
                    "must be system:node:<node name>, the node name a DNS name".into(),
                ));
            }
            if !declared.node(node) {
                return Err(undeclared(
                    "common_name",
                    format!("node {node:?} matches none of the cluster's node_names"),
                ));
            }
            given.clone()
        }
    };
    validate_identity("common_name", &common_name).map_err(|e| invalid(&e.field, e.detail))?;
    if let Some(given) = &request.organizations
        && given.iter().map(String::as_str).ne(profile.organizations.iter().copied())
    {
        let detail = if profile.organizations.is_empty() {
            format!("the {} profile carries no organizations", profile.name)
        } else {
            format!("the {} profile's organizations are always {:?}", profile.name, profile.organizations)
        };
        return Err(invalid("organizations", detail));
    }
    if profile.name != "apiserver" && (request.cluster_domain.is_some() || request.service_ip.is_some()) {
        let field = if request.cluster_domain.is_some() { "cluster_domain" } else { "service_ip" };
        return Err(invalid(field, "only the apiserver profile takes it".into()));
    }

    let mut dns_names: Vec<String> = Vec::new();
    let mut ip_addresses: Vec<IpAddr> = Vec::new();
    let given = !request.dns_names.is_empty() || !request.ip_addresses.is_empty();
    match profile.subject_alt_names {
        SanRule::Forbidden if given => {
            let field = if request.dns_names.is_empty() { "ip_addresses" } else { "dns_names" };
            return Err(invalid(
                field,
                format!("the {} profile carries no subject alternative names", profile.name),
            ));
        }
        SanRule::Required if !given => {
            return Err(invalid(
                "dns_names",
                format!("the {} profile needs a DNS name or IP address", profile.name),
            ));
        }
        SanRule::Kubernetes => {
            let domain = request.cluster_domain.as_deref().unwrap_or(DEFAULT_CLUSTER_DOMAIN);
            if !is_dns_name(domain) {
                return Err(invalid("cluster_domain", "must be a DNS name".into()));
            }
            for name in ["kubernetes", "kubernetes.default", "kubernetes.default.svc"] {
                dns_names.push(name.to_string());
            }
            let service_name = format!("kubernetes.default.svc.{domain}");
            if domain != DEFAULT_CLUSTER_DOMAIN && !declared.control_plane(&service_name) {
                return Err(undeclared(
                    "cluster_domain",
                    format!("{service_name:?} is not among the cluster's control_plane_names"),
                ));
            }
            dns_names.push(service_name);
            let service_ip = request.service_ip.as_deref().unwrap_or(DEFAULT_SERVICE_IP);
            let ip: IpAddr =
                service_ip.parse().map_err(|_| invalid("service_ip", "must be an IP address".into()))?;
            if service_ip != DEFAULT_SERVICE_IP && !declared.control_plane(service_ip) {
                return Err(undeclared(
                    "service_ip",
                    format!("{service_ip} is not among the cluster's control_plane_names"),
                ));
            }
            ip_addresses.push(ip);
        }
        _ => {}
    }
    // Requested names must be declared by the cluster: control-plane names for the control
    // plane's serving certificates, node names for kubelets'. Implied names are kca's own.
    let declared_for = |name: &str| match profile.authority {
        AuthorityKind::Kubelet => declared.node(name),
        _ => declared.control_plane(name),
    };
    let which =
        if profile.authority == AuthorityKind::Kubelet { "node_names" } else { "control_plane_names" };
    for (i, name) in request.dns_names.iter().enumerate() {
        if !is_dns_name(name) {
            return Err(invalid(&format!("dns_names[{i}]"), format!("{name:?} is not a DNS name")));
        }
        if !declared_for(name) {
            return Err(undeclared(
                &format!("dns_names[{i}]"),
                format!("{name:?} is not among the cluster's {which} (nor its server's host)"),
            ));
        }
        if !dns_names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            dns_names.push(name.clone());
        }
    }
    for name in profile.implied_dns_names {
        if !dns_names.iter().any(|n| n == name) {
            dns_names.push(name.to_string());
        }
    }
    for (i, text) in request.ip_addresses.iter().enumerate() {
        let ip: IpAddr = text
            .parse()
            .map_err(|_| invalid(&format!("ip_addresses[{i}]"), format!("{text:?} is not an IP address")))?;
        if !declared_for(text) {
            return Err(undeclared(
                &format!("ip_addresses[{i}]"),
                format!("{text} is not among the cluster's {which} (nor its server's host)"),
            ));
        }
        if !ip_addresses.contains(&ip) {
            ip_addresses.push(ip);
        }
    }
    for text in profile.implied_ip_addresses {
        let ip: IpAddr = text.parse().expect("implied addresses are valid");
        if !ip_addresses.contains(&ip) {
            ip_addresses.push(ip);
        }
    }
    if dns_names.len() + ip_addresses.len() > 100 {
        return Err(invalid("dns_names", "at most 100 subject alternative names".into()));
    }

    Ok(Usage {
        common_name,
        organizations: profile.organizations.iter().map(|o| o.to_string()).collect(),
        extended_usages: profile.extended_key_usages.to_vec(),
        dns_names,
        ip_addresses,
        ttl,
    })
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
        if *group == SYSTEM_MASTERS && !policy.names_privileged_group(group) {
            return Err(Refusal::policy(
                "allow_system_masters",
                "profile",
                format!(
                    "the {} profile carries system:masters, which bypasses RBAC: this cluster's policy does not allow it",
                    profile.name
                ),
            ));
        }
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
    resolve(profile, request, names, Duration::from_secs(ttl))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuance::test_claims as claims;
    use crate::profiles::find;
    use crate::token::Scope;

    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

    fn request() -> ComponentRequest {
        ComponentRequest::default()
    }

    fn names() -> (Vec<String>, Vec<String>) {
        (vec!["api.example.com".into(), "etcd-0".into(), "10.0.0.9".into()], vec!["worker-*".into()])
    }

    fn resolve_declared(name: &str, request: &ComponentRequest) -> Result<Usage, Refusal> {
        let (control_plane_names, node_names) = names();
        let declared = DeclaredNames {
            server_host: Some("k8s.example.com"),
            control_plane_names: &control_plane_names,
            node_names: &node_names,
        };
        resolve(&find(name).unwrap(), request, &declared, YEAR)
    }

    #[test]
    fn apiserver_gets_the_kubernetes_names_and_service_ip() {
        let usage = resolve_declared(
            "apiserver",
            &ComponentRequest { dns_names: vec!["api.example.com".into()], ..request() },
        )
        .unwrap();
        assert_eq!(usage.common_name, "kube-apiserver");
        assert_eq!(
            usage.dns_names,
            [
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "api.example.com"
            ]
        );
        assert_eq!(usage.ip_addresses, vec!["10.96.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(usage.ttl, YEAR);
    }

    #[test]
    fn serving_certificates_carry_only_declared_names() {
        let rule = |name: &str, request: ComponentRequest| match resolve_declared(name, &request) {
            Err(Refusal::Policy { rule, field, .. }) => format!("{rule} {field}"),
            other => panic!("{name}: expected a refusal, got {other:?}"),
        };
        let dns = |n: &str| ComponentRequest { dns_names: vec![n.into()], ..request() };
        let ip = |n: &str| ComponentRequest { ip_addresses: vec![n.into()], ..request() };
        assert_eq!(rule("apiserver", dns("login.microsoftonline.com")), "declared_names dns_names[0]");
        assert_eq!(rule("apiserver", ip("10.0.0.1")), "declared_names ip_addresses[0]");
        assert_eq!(rule("etcd-server", dns("evil.example.com")), "declared_names dns_names[0]");
        assert_eq!(rule("etcd-peer", ip("192.0.2.1")), "declared_names ip_addresses[0]");
        assert_eq!(
            rule("apiserver", ComponentRequest { cluster_domain: Some("example.org".into()), ..request() }),
            "declared_names cluster_domain"
        );
        assert_eq!(
            rule("apiserver", ComponentRequest { service_ip: Some("10.0.0.1".into()), ..request() }),
            "declared_names service_ip"
        );
        let node = |n: &str| ComponentRequest { common_name: Some(format!("system:node:{n}")), ..request() };
        assert_eq!(rule("kubelet-client", node("db-1")), "declared_names common_name");
        let kubelet = ComponentRequest { dns_names: vec!["api.example.com".into()], ..node("worker-1") };
        assert_eq!(rule("kubelet-serving", kubelet), "declared_names dns_names[0]");
        // What the cluster declared goes through, its server's host included, in any case.
        assert!(resolve_declared("apiserver", &dns("K8S.example.com")).is_ok());
        assert!(resolve_declared("apiserver", &ip("10.0.0.9")).is_ok());
        assert!(resolve_declared("etcd-server", &dns("etcd-0")).is_ok());
        assert!(resolve_declared("kubelet-client", &node("worker-7")).is_ok());
        let kubelet = ComponentRequest { dns_names: vec!["worker-7".into()], ..node("worker-7") };
        assert!(resolve_declared("kubelet-serving", &kubelet).is_ok());
    }

    #[test]
    fn forbidden_fields_are_refused() {
        let refused = |name: &str, request: ComponentRequest| match resolve_declared(name, &request) {
            Err(Refusal::Invalid { field, .. }) => field,
            other => panic!("{name}: expected a refusal, got {other:?}"),
        };
        assert_eq!(
            refused("scheduler", ComponentRequest { common_name: Some("x".into()), ..request() }),
            "common_name"
        );
        assert_eq!(
            refused("scheduler", ComponentRequest { dns_names: vec!["a".into()], ..request() }),
            "dns_names"
        );
        assert_eq!(
            refused("etcd-server", ComponentRequest { organizations: Some(vec!["o".into()]), ..request() }),
            "organizations"
        );
        assert_eq!(refused("etcd-server", request()), "dns_names");
        assert_eq!(
            refused("kubelet-client", ComponentRequest { common_name: Some("worker".into()), ..request() }),
            "common_name"
        );
        assert_eq!(
            refused("scheduler", ComponentRequest { service_ip: Some("10.0.0.1".into()), ..request() }),
            "service_ip"
        );
    }

    #[test]
    fn node_profiles_take_the_node_name() {
        let usage = resolve_declared(
            "kubelet-serving",
            &ComponentRequest {
                common_name: Some("system:node:worker-1".into()),
                dns_names: vec!["worker-1".into()],
                ..request()
            },
        )
        .unwrap();
        assert_eq!(usage.common_name, "system:node:worker-1");
        assert_eq!(usage.organizations, ["system:nodes"]);
        let etcd = resolve_declared(
            "etcd-peer",
            &ComponentRequest { dns_names: vec!["etcd-0".into()], ..request() },
        )
        .unwrap();
        assert_eq!(etcd.dns_names, ["etcd-0", "localhost"]);
        assert_eq!(etcd.ip_addresses.len(), 2);
    }

    #[test]
    fn component_profiles_are_privileged() {
        let (cp, nodes) = (vec!["etcd-0".to_string()], vec!["worker-*".to_string()]);
        let names = DeclaredNames { server_host: None, control_plane_names: &cp, node_names: &nodes };
        let all = IssuancePolicy {
            allowed_profiles: crate::profiles::profiles().iter().map(|p| p.name.to_string()).collect(),
            allow_system_masters: true,
            ..Default::default()
        };
        // system:masters needs the policy's own consent besides allowed_profiles.
        let no_masters = IssuancePolicy { allow_system_masters: false, ..all.clone() };
        let super_admin = crate::profiles::find("super-admin").unwrap();
        assert!(matches!(
            decide_component(&no_masters, &claims(&[Scope::Admin]), &super_admin, &request(), &names),
            Err(Refusal::Policy { rule: "allow_system_masters", .. })
        ));
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
