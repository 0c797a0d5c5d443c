//! Component certificate profiles, after the Kubernetes PKI requirements (kubeadm's table): for
//! each, the CA that signs, the usages, the subject rules, the SANs and the lifetime.
//!
//! Only peer profiles are usable as both client and server.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use crate::issuance::{Refusal, Usage};
use crate::pki::AuthorityKind;
use crate::pki::leaf::ExtendedUsage;

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// How the CN of a profile is chosen.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(tag = "rule", content = "value", rename_all = "snake_case")]
pub enum CommonNameRule {
    /// Always this CN; a request may repeat it but not change it.
    Fixed(&'static str),
    /// This CN unless the request gives another.
    Default(&'static str),
    /// `system:node:<node name>`, given by the request.
    Node,
}

/// Whether a profile's certificates carry subject alternative names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SanRule {
    /// None may be given.
    Forbidden,
    /// At least one DNS name or IP address must be given.
    Required,
    /// Added by kca; more may be given.
    Kubernetes,
}

/// A component certificate profile.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Profile {
    pub name: &'static str,
    /// The CA that signs it.
    pub authority: AuthorityKind,
    /// `server_auth`, `client_auth`.
    #[schema(value_type = Vec<String>)]
    #[serde(serialize_with = "serialize_usages")]
    pub extended_key_usages: &'static [ExtendedUsage],
    pub common_name: CommonNameRule,
    /// The O entries, fixed by the profile (none when empty).
    pub organizations: &'static [&'static str],
    pub subject_alt_names: SanRule,
    /// Names added to every certificate of the profile.
    pub implied_dns_names: &'static [&'static str],
    pub implied_ip_addresses: &'static [&'static str],
    pub default_ttl_seconds: u64,
    pub max_ttl_seconds: u64,
}

fn serialize_usages<S: serde::Serializer>(
    usages: &&'static [ExtendedUsage],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = serializer.serialize_seq(Some(usages.len()))?;
    for usage in usages.iter() {
        seq.serialize_element(match usage {
            ExtendedUsage::ServerAuth => "server_auth",
            ExtendedUsage::ClientAuth => "client_auth",
        })?;
    }
    seq.end()
}

const SERVER: &[ExtendedUsage] = &[ExtendedUsage::ServerAuth];
const CLIENT: &[ExtendedUsage] = &[ExtendedUsage::ClientAuth];
const PEER: &[ExtendedUsage] = &[ExtendedUsage::ServerAuth, ExtendedUsage::ClientAuth];
const LOOPBACK_NAMES: &[&str] = &["localhost"];
const LOOPBACK_IPS: &[&str] = &["127.0.0.1", "::1"];

const fn profile(
    name: &'static str,
    authority: AuthorityKind,
    extended_key_usages: &'static [ExtendedUsage],
    common_name: CommonNameRule,
    organizations: &'static [&'static str],
    subject_alt_names: SanRule,
) -> Profile {
    Profile {
        name,
        authority,
        extended_key_usages,
        common_name,
        organizations,
        subject_alt_names,
        implied_dns_names: &[],
        implied_ip_addresses: &[],
        default_ttl_seconds: YEAR.as_secs(),
        max_ttl_seconds: 2 * YEAR.as_secs(),
    }
}

/// Every profile kca issues.
pub fn profiles() -> Vec<Profile> {
    use AuthorityKind::*;
    use CommonNameRule::*;
    vec![
        Profile {
            implied_dns_names: LOOPBACK_NAMES,
            implied_ip_addresses: LOOPBACK_IPS,
            ..profile("etcd-server", Etcd, SERVER, Default("kube-etcd"), &[], SanRule::Required)
        },
        Profile {
            implied_dns_names: LOOPBACK_NAMES,
            implied_ip_addresses: LOOPBACK_IPS,
            ..profile("etcd-peer", Etcd, PEER, Default("kube-etcd-peer"), &[], SanRule::Required)
        },
        profile(
            "etcd-healthcheck-client",
            Etcd,
            CLIENT,
            Fixed("kube-etcd-healthcheck-client"),
            &[],
            SanRule::Forbidden,
        ),
        profile(
            "apiserver-etcd-client",
            Etcd,
            CLIENT,
            Fixed("kube-apiserver-etcd-client"),
            &[],
            SanRule::Forbidden,
        ),
        profile("apiserver", ControlPlane, SERVER, Fixed("kube-apiserver"), &[], SanRule::Kubernetes),
        profile(
            "apiserver-kubelet-client",
            ControlPlane,
            CLIENT,
            Fixed("kube-apiserver-kubelet-client"),
            &["kubeadm:cluster-admins"],
            SanRule::Forbidden,
        ),
        profile(
            "controller-manager",
            ControlPlane,
            CLIENT,
            Fixed("system:kube-controller-manager"),
            &[],
            SanRule::Forbidden,
        ),
        profile("scheduler", ControlPlane, CLIENT, Fixed("system:kube-scheduler"), &[], SanRule::Forbidden),
        profile(
            "admin",
            Operators,
            CLIENT,
            Default("kubernetes-admin"),
            &["kubeadm:cluster-admins"],
            SanRule::Forbidden,
        ),
        profile("kubelet-serving", Kubelet, SERVER, Node, &["system:nodes"], SanRule::Required),
        profile("kubelet-client", Kubelet, CLIENT, Node, &["system:nodes"], SanRule::Forbidden),
        profile(
            "front-proxy-client",
            Aggregation,
            CLIENT,
            Fixed("front-proxy-client"),
            &[],
            SanRule::Forbidden,
        ),
    ]
}

pub fn find(name: &str) -> Option<Profile> {
    profiles().into_iter().find(|p| p.name == name)
}

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

/// Check a request against a profile and work out the certificate's subject, names and TTL.
pub fn resolve(profile: &Profile, request: &ComponentRequest) -> Result<Usage, Refusal> {
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
            given.clone()
        }
    };
    crate::policy::validate_identity("common_name", &common_name).map_err(|e| invalid(&e.field, e.detail))?;
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
            let domain = request.cluster_domain.as_deref().unwrap_or("cluster.local");
            if !is_dns_name(domain) {
                return Err(invalid("cluster_domain", "must be a DNS name".into()));
            }
            for name in ["kubernetes", "kubernetes.default", "kubernetes.default.svc"] {
                dns_names.push(name.to_string());
            }
            dns_names.push(format!("kubernetes.default.svc.{domain}"));
            let service_ip = request.service_ip.as_deref().unwrap_or("10.96.0.1");
            ip_addresses
                .push(service_ip.parse().map_err(|_| invalid("service_ip", "must be an IP address".into()))?);
        }
        _ => {}
    }
    for (i, name) in request
        .dns_names
        .iter()
        .chain(profile.implied_dns_names.iter().map(|n| n.to_string()).collect::<Vec<_>>().iter())
        .enumerate()
    {
        if !is_dns_name(name) {
            return Err(invalid(&format!("dns_names[{i}]"), format!("{name:?} is not a DNS name")));
        }
        if !dns_names.contains(name) {
            dns_names.push(name.clone());
        }
    }
    for (i, text) in request
        .ip_addresses
        .iter()
        .map(String::as_str)
        .chain(profile.implied_ip_addresses.iter().copied())
        .enumerate()
    {
        let ip: IpAddr = text
            .parse()
            .map_err(|_| invalid(&format!("ip_addresses[{i}]"), format!("{text:?} is not an IP address")))?;
        if !ip_addresses.contains(&ip) {
            ip_addresses.push(ip);
        }
    }
    if dns_names.len() + ip_addresses.len() > 100 {
        return Err(invalid("dns_names", "at most 100 subject alternative names".into()));
    }

    let ttl = request.ttl_seconds.unwrap_or(profile.default_ttl_seconds);
    if ttl == 0 || ttl > profile.max_ttl_seconds {
        return Err(invalid(
            "ttl_seconds",
            format!("must be between 1 and {} for the {} profile", profile.max_ttl_seconds, profile.name),
        ));
    }
    Ok(Usage {
        common_name,
        organizations: profile.organizations.iter().map(|o| o.to_string()).collect(),
        extended_usages: profile.extended_key_usages.to_vec(),
        dns_names,
        ip_addresses,
        ttl: Duration::from_secs(ttl),
    })
}

/// A DNS name: labels of letters, digits and `-` (and a leading `*.` wildcard is not allowed).
fn is_dns_name(name: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ComponentRequest {
        ComponentRequest::default()
    }

    #[test]
    fn only_peer_profiles_serve_and_authenticate_clients() {
        for profile in profiles() {
            let both = profile.extended_key_usages.contains(&ExtendedUsage::ServerAuth)
                && profile.extended_key_usages.contains(&ExtendedUsage::ClientAuth);
            assert_eq!(both, profile.name.ends_with("-peer"), "{}", profile.name);
        }
    }

    #[test]
    fn apiserver_gets_the_kubernetes_names_and_service_ip() {
        let apiserver = find("apiserver").unwrap();
        let usage = resolve(
            &apiserver,
            &ComponentRequest {
                dns_names: vec!["api.example.com".into()],
                cluster_domain: Some("corp".into()),
                ..request()
            },
        )
        .unwrap();
        assert_eq!(usage.common_name, "kube-apiserver");
        assert_eq!(
            usage.dns_names,
            [
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.corp",
                "api.example.com"
            ]
        );
        assert_eq!(usage.ip_addresses, vec!["10.96.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(usage.ttl, YEAR);
    }

    #[test]
    fn forbidden_fields_are_refused() {
        let refused = |name: &str, request: ComponentRequest| match resolve(&find(name).unwrap(), &request) {
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
            refused(
                "front-proxy-client",
                ComponentRequest { ttl_seconds: Some(3 * YEAR.as_secs()), ..request() }
            ),
            "ttl_seconds"
        );
        assert_eq!(
            refused("scheduler", ComponentRequest { service_ip: Some("10.0.0.1".into()), ..request() }),
            "service_ip"
        );
    }

    #[test]
    fn node_profiles_take_the_node_name() {
        let usage = resolve(
            &find("kubelet-serving").unwrap(),
            &ComponentRequest {
                common_name: Some("system:node:worker-1".into()),
                dns_names: vec!["worker-1".into()],
                ip_addresses: vec!["10.0.0.5".into()],
                ..request()
            },
        )
        .unwrap();
        assert_eq!(usage.common_name, "system:node:worker-1");
        assert_eq!(usage.organizations, ["system:nodes"]);
        let etcd = resolve(
            &find("etcd-peer").unwrap(),
            &ComponentRequest { dns_names: vec!["etcd-0".into()], ..request() },
        )
        .unwrap();
        assert_eq!(etcd.dns_names, ["etcd-0", "localhost"]);
        assert_eq!(etcd.ip_addresses.len(), 2);
    }
}
