//! Component certificate profiles, after the Kubernetes PKI requirements (kubeadm's table): for
//! each, the CA that signs, the usages, the subject rules, the SANs and the lifetime.
//!
//! Only peer profiles and `etcd-server` are usable as both client and server: etcd dials its own
//! gRPC gateway with its serving certificate, so kubeadm's table gives it `server, client` (a
//! serving certificate without clientAuth breaks etcd's `/v3/*` HTTP API). Every profile is
//! privileged: each one
//! signs an identity the control plane trusts as a component (or a serving certificate it trusts
//! for its own names), so only an admin of the cluster obtains one, and only for profiles the
//! cluster's policy names (`crate::issuance::decide_component`).

use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

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
            // kubeadm: "server, client"; etcd's gRPC gateway dials etcd with this certificate.
            ..profile("etcd-server", Etcd, PEER, Default("kube-etcd"), &[], SanRule::Required)
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
        // kubeadm's super-admin.conf: system:masters bypasses RBAC, so the cluster's policy must
        // also allow system:masters (`allow_system_masters`) for it to be issued.
        profile(
            "super-admin",
            Operators,
            CLIENT,
            Fixed("kubernetes-super-admin"),
            &["system:masters"],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_peer_profiles_and_etcd_server_serve_and_authenticate_clients() {
        for profile in profiles() {
            let both = profile.extended_key_usages.contains(&ExtendedUsage::ServerAuth)
                && profile.extended_key_usages.contains(&ExtendedUsage::ClientAuth);
            let expected = profile.name.ends_with("-peer") || profile.name == "etcd-server";
            assert_eq!(both, expected, "{}", profile.name);
        }
    }
}
