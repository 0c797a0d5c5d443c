//! What an API token allows, as named in its `scopes` claim.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a token allows. `admin` allows everything, for the clusters the token names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum Scope {
    #[serde(rename = "admin")]
    Admin,
    #[serde(rename = "clusters:write")]
    ClustersWrite,
    #[serde(rename = "kubeconfigs:issue")]
    KubeconfigsIssue,
    /// Kept so that tokens carrying it still parse: every component profile is privileged, so it
    /// no longer allows issuing anything (an admin token of the cluster does).
    #[serde(rename = "certificates:issue")]
    CertificatesIssue,
    #[serde(rename = "certificates:revoke")]
    CertificatesRevoke,
    #[serde(rename = "read")]
    Read,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::Admin,
        Scope::ClustersWrite,
        Scope::KubeconfigsIssue,
        Scope::CertificatesIssue,
        Scope::CertificatesRevoke,
        Scope::Read,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::ClustersWrite => "clusters:write",
            Scope::KubeconfigsIssue => "kubeconfigs:issue",
            Scope::CertificatesIssue => "certificates:issue",
            Scope::CertificatesRevoke => "certificates:revoke",
            Scope::Read => "read",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}
