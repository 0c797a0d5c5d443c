//! kca's component profiles against kubeadm's certificate table (kubeadm v1.31+:
//! `cmd/kubeadm/app/phases/certs/certlist.go` and the kubeconfig phase), for a control-plane node
//! `cp-1` that advertises `10.0.0.10`. Each row is what kubeadm writes; the test issues the kca
//! profile as `kca pki export` asks for it and compares CA, CN, O, usages, SANs and lifetime.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use super::{ComponentRequest, DeclaredNames, decide_component};
use crate::pki::AuthorityKind;
use crate::pki::leaf::ExtendedUsage;
use crate::policy::IssuancePolicy;
use crate::token::Scope;

const NODE: &str = "cp-1";
const ADVERTISE: &str = "10.0.0.10";
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// kubeadm's CA names, and the kca authority kind each maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KubeadmCa {
    /// `ca` ("kubernetes"): `pki/ca.crt`.
    Kubernetes,
    /// `front-proxy-ca`.
    FrontProxy,
    /// `etcd-ca`: `pki/etcd/ca.crt`.
    Etcd,
}

impl KubeadmCa {
    fn kca_kind(self) -> AuthorityKind {
        match self {
            KubeadmCa::Kubernetes => AuthorityKind::ControlPlane,
            KubeadmCa::FrontProxy => AuthorityKind::Aggregation,
            KubeadmCa::Etcd => AuthorityKind::Etcd,
        }
    }
}

struct Row {
    /// kubeadm's name for the certificate (a `certs` phase name or a kubeconfig file).
    kubeadm: &'static str,
    /// The kca profile that stands for it.
    profile: &'static str,
    ca: KubeadmCa,
    common_name: &'static str,
    organizations: &'static [&'static str],
    usages: &'static [ExtendedUsage],
    dns_names: &'static [&'static str],
    ip_addresses: &'static [&'static str],
}

const SERVER: &[ExtendedUsage] = &[ExtendedUsage::ServerAuth];
const CLIENT: &[ExtendedUsage] = &[ExtendedUsage::ClientAuth];
const BOTH: &[ExtendedUsage] = &[ExtendedUsage::ServerAuth, ExtendedUsage::ClientAuth];

const fn client(
    kubeadm: &'static str,
    profile: &'static str,
    ca: KubeadmCa,
    common_name: &'static str,
    organizations: &'static [&'static str],
) -> Row {
    Row {
        kubeadm,
        profile,
        ca,
        common_name,
        organizations,
        usages: CLIENT,
        dns_names: &[],
        ip_addresses: &[],
    }
}

/// kubeadm's table. Leaves live one year (`CertificateValidityPeriod`), CAs ten.
const KUBEADM: &[Row] = &[
    Row {
        kubeadm: "apiserver",
        profile: "apiserver",
        ca: KubeadmCa::Kubernetes,
        common_name: "kube-apiserver",
        organizations: &[],
        usages: SERVER,
        dns_names: &[
            NODE,
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        ip_addresses: &["10.96.0.1", ADVERTISE],
    },
    client(
        "apiserver-kubelet-client",
        "apiserver-kubelet-client",
        KubeadmCa::Kubernetes,
        "kube-apiserver-kubelet-client",
        &["kubeadm:cluster-admins"],
    ),
    client("front-proxy-client", "front-proxy-client", KubeadmCa::FrontProxy, "front-proxy-client", &[]),
    // "server, client": etcd dials its own gRPC gateway with its serving certificate.
    Row {
        kubeadm: "etcd-server",
        profile: "etcd-server",
        ca: KubeadmCa::Etcd,
        common_name: NODE,
        organizations: &[],
        usages: BOTH,
        dns_names: &[NODE, "localhost"],
        ip_addresses: &[ADVERTISE, "127.0.0.1", "::1"],
    },
    Row {
        kubeadm: "etcd-peer",
        profile: "etcd-peer",
        ca: KubeadmCa::Etcd,
        common_name: NODE,
        organizations: &[],
        usages: BOTH,
        dns_names: &[NODE, "localhost"],
        ip_addresses: &[ADVERTISE, "127.0.0.1", "::1"],
    },
    client(
        "etcd-healthcheck-client",
        "etcd-healthcheck-client",
        KubeadmCa::Etcd,
        "kube-etcd-healthcheck-client",
        &[],
    ),
    client(
        "apiserver-etcd-client",
        "apiserver-etcd-client",
        KubeadmCa::Etcd,
        "kube-apiserver-etcd-client",
        &[],
    ),
    // The kubeconfig phase: client certificates signed by the "kubernetes" CA.
    client("admin.conf", "admin", KubeadmCa::Kubernetes, "kubernetes-admin", &["kubeadm:cluster-admins"]),
    client(
        "super-admin.conf",
        "super-admin",
        KubeadmCa::Kubernetes,
        "kubernetes-super-admin",
        &["system:masters"],
    ),
    client(
        "controller-manager.conf",
        "controller-manager",
        KubeadmCa::Kubernetes,
        "system:kube-controller-manager",
        &[],
    ),
    client("scheduler.conf", "scheduler", KubeadmCa::Kubernetes, "system:kube-scheduler", &[]),
    client("kubelet.conf", "kubelet-client", KubeadmCa::Kubernetes, "system:node:cp-1", &["system:nodes"]),
];

/// Where kca deliberately differs from kubeadm, and why. Anything else that differs fails.
fn deliberate_ca_difference(profile: &str) -> Option<(AuthorityKind, &'static str)> {
    match profile {
        "admin" | "super-admin" => Some((
            AuthorityKind::Operators,
            "people's kubeconfigs come from the operators CA, which can be rotated without touching the control plane",
        )),
        "kubelet-client" => Some((
            AuthorityKind::Kubelet,
            "kubelet identities have their own CA, so node credentials cannot be minted by the control-plane CA's users",
        )),
        _ => None,
    }
}

/// What `kca pki export` sends for a row on node `cp-1` advertising `10.0.0.10`.
fn request_for(row: &Row) -> ComponentRequest {
    let mut request = ComponentRequest::default();
    match row.profile {
        "apiserver" => {
            request.dns_names = vec![NODE.into()];
            request.ip_addresses = vec![ADVERTISE.into()];
        }
        "etcd-server" | "etcd-peer" => {
            request.common_name = Some(NODE.into());
            request.dns_names = vec![NODE.into()];
            request.ip_addresses = vec![ADVERTISE.into()];
        }
        "kubelet-client" => request.common_name = Some(format!("system:node:{NODE}")),
        _ => {}
    }
    request
}

#[test]
fn every_profile_matches_kubeadms_table() {
    let policy = IssuancePolicy {
        allowed_profiles: crate::profiles::profiles().iter().map(|p| p.name.to_string()).collect(),
        allow_system_masters: true,
        ..Default::default()
    };
    let admin = super::test_claims(&[Scope::Admin]);
    let (control_plane, nodes) = (vec![NODE.to_string(), ADVERTISE.to_string()], vec![NODE.to_string()]);
    let names = DeclaredNames { server_host: None, control_plane_names: &control_plane, node_names: &nodes };
    let set = |items: Vec<String>| items.into_iter().map(|s| s.to_ascii_lowercase()).collect::<BTreeSet<_>>();
    for row in KUBEADM {
        let profile = crate::profiles::find(row.profile).unwrap();
        let what = format!("{} (kca profile {})", row.kubeadm, row.profile);
        match deliberate_ca_difference(row.profile) {
            Some((kind, _why)) => assert_eq!(profile.authority, kind, "{what}: CA"),
            None => assert_eq!(profile.authority, row.ca.kca_kind(), "{what}: CA"),
        }
        let usage = decide_component(&policy, &admin, &profile, &request_for(row), &names)
            .unwrap_or_else(|refusal| panic!("{what}: {refusal:?}"));
        assert_eq!(usage.common_name, row.common_name, "{what}: CN");
        assert_eq!(usage.organizations, row.organizations, "{what}: O");
        assert_eq!(usage.extended_usages, row.usages, "{what}: extended key usages");
        assert_eq!(
            set(usage.dns_names.clone()),
            set(row.dns_names.iter().map(|s| s.to_string()).collect()),
            "{what}: DNS names"
        );
        let ips: BTreeSet<IpAddr> = row.ip_addresses.iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(usage.ip_addresses.iter().copied().collect::<BTreeSet<_>>(), ips, "{what}: IP addresses");
        assert_eq!(usage.ttl, YEAR, "{what}: lifetime");
    }
    // Every kca profile is in the table, except kubelet serving certificates (kubeadm leaves
    // those to the kubelet, self-signed or through its CSR API).
    let covered: BTreeSet<&str> = KUBEADM.iter().map(|r| r.profile).collect();
    for profile in crate::profiles::profiles() {
        assert!(
            covered.contains(profile.name) || profile.name == "kubelet-serving",
            "{} untested",
            profile.name
        );
    }
}

#[test]
fn authorities_last_ten_years_as_kubeadms() {
    assert_eq!(crate::pki::ca::AUTHORITY_VALIDITY.whole_days(), 3652);
}
