//! The five kinds of certificate authority a cluster holds, one per traffic flow.

use serde::{Deserialize, Serialize};

/// One CA per traffic flow, so that a client of one flow can never talk to the server of another.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum AuthorityKind {
    /// etcd serving, peer and client certificates.
    Etcd,
    /// The "kubernetes" CA: apiserver serving and control-plane clients.
    ControlPlane,
    /// Humans and tools: kubeconfig client certificates.
    Operators,
    /// Kubelet serving and client certificates.
    Kubelet,
    /// Front-proxy: the aggregation layer, metrics-server, the revocation proxy.
    Aggregation,
}

impl AuthorityKind {
    pub const ALL: [AuthorityKind; 5] = [
        AuthorityKind::Etcd,
        AuthorityKind::ControlPlane,
        AuthorityKind::Operators,
        AuthorityKind::Kubelet,
        AuthorityKind::Aggregation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthorityKind::Etcd => "etcd",
            AuthorityKind::ControlPlane => "control-plane",
            AuthorityKind::Operators => "operators",
            AuthorityKind::Kubelet => "kubelet",
            AuthorityKind::Aggregation => "aggregation",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == s)
    }

    /// The valid kinds, comma separated, for error messages.
    pub fn valid_list() -> String {
        Self::ALL.map(AuthorityKind::as_str).join(", ")
    }
}

impl std::fmt::Display for AuthorityKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
