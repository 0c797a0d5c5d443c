//! Kubeconfig and ExecCredential documents.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

/// The cluster half of a kubeconfig.
#[derive(Debug, Clone)]
pub struct ClusterEndpoint<'a> {
    pub name: &'a str,
    pub server: &'a str,
    /// The control-plane CA bundle, soonest-expiring first.
    pub ca_bundle_pem: &'a str,
}

/// How the user authenticates.
#[derive(Debug, Clone)]
pub enum UserCredential<'a> {
    /// An embedded client certificate, and its key unless the client kept it (CSR issuance).
    Certificate { certificate_pem: &'a str, key_pem: Option<&'a str> },
    /// A `client.authentication.k8s.io/v1` exec plugin.
    Exec { command: &'a str, args: Vec<String>, install_hint: &'a str },
}

#[derive(Serialize)]
struct Kubeconfig<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    clusters: Vec<NamedCluster<'a>>,
    users: Vec<NamedUser<'a>>,
    contexts: Vec<NamedContext<'a>>,
    #[serde(rename = "current-context")]
    current_context: String,
    preferences: Preferences,
}

#[derive(Serialize)]
struct Preferences {}

#[derive(Serialize)]
struct NamedCluster<'a> {
    name: &'a str,
    cluster: ClusterEntry<'a>,
}

#[derive(Serialize)]
struct ClusterEntry<'a> {
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: String,
    server: &'a str,
}

#[derive(Serialize)]
struct NamedUser<'a> {
    name: &'a str,
    user: UserEntry<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum UserEntry<'a> {
    Certificate {
        #[serde(rename = "client-certificate-data")]
        client_certificate_data: String,
        #[serde(rename = "client-key-data", skip_serializing_if = "Option::is_none")]
        client_key_data: Option<String>,
    },
    Exec {
        exec: ExecEntry<'a>,
    },
}

#[derive(Serialize)]
struct ExecEntry<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    command: &'a str,
    args: Vec<String>,
    #[serde(rename = "interactiveMode")]
    interactive_mode: &'static str,
    #[serde(rename = "provideClusterInfo")]
    provide_cluster_info: bool,
    #[serde(rename = "installHint")]
    install_hint: &'a str,
}

#[derive(Serialize)]
struct NamedContext<'a> {
    name: String,
    context: ContextEntry<'a>,
}

#[derive(Serialize)]
struct ContextEntry<'a> {
    cluster: &'a str,
    user: &'a str,
}

/// Render a kubeconfig with one cluster, one user and one current context `<user>@<cluster>`.
pub fn render(cluster: &ClusterEndpoint<'_>, user_name: &str, credential: &UserCredential<'_>) -> String {
    let user = match credential {
        UserCredential::Certificate { certificate_pem, key_pem } => UserEntry::Certificate {
            client_certificate_data: STANDARD.encode(certificate_pem),
            client_key_data: key_pem.map(|key| STANDARD.encode(key)),
        },
        UserCredential::Exec { command, args, install_hint } => UserEntry::Exec {
            exec: ExecEntry {
                api_version: "client.authentication.k8s.io/v1",
                command,
                args: args.clone(),
                interactive_mode: "Never",
                provide_cluster_info: false,
                install_hint,
            },
        },
    };
    let context_name = format!("{user_name}@{}", cluster.name);
    let document = Kubeconfig {
        api_version: "v1",
        kind: "Config",
        clusters: vec![NamedCluster {
            name: cluster.name,
            cluster: ClusterEntry {
                certificate_authority_data: STANDARD.encode(cluster.ca_bundle_pem),
                server: cluster.server,
            },
        }],
        users: vec![NamedUser { name: user_name, user }],
        contexts: vec![NamedContext {
            name: context_name.clone(),
            context: ContextEntry { cluster: cluster.name, user: user_name },
        }],
        current_context: context_name,
        preferences: Preferences {},
    };
    serde_norway::to_string(&document).expect("a kubeconfig always serializes")
}

/// A `client.authentication.k8s.io/v1` ExecCredential, the answer of an exec plugin.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ExecCredential {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub status: ExecCredentialStatus,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecCredentialStatus {
    pub expiration_timestamp: String,
    pub client_certificate_data: String,
    pub client_key_data: String,
}

impl ExecCredential {
    pub fn new(certificate_pem: &str, key_pem: &str, expiration_rfc3339: String) -> Self {
        Self {
            api_version: "client.authentication.k8s.io/v1".into(),
            kind: "ExecCredential".into(),
            status: ExecCredentialStatus {
                expiration_timestamp: expiration_rfc3339,
                client_certificate_data: certificate_pem.into(),
                client_key_data: key_pem.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_kubeconfig_has_string_values_only_under_user() {
        let cluster =
            ClusterEndpoint { name: "prod", server: "https://k8s.example:6443", ca_bundle_pem: "CA" };
        let yaml = render(
            &cluster,
            "alice",
            &UserCredential::Certificate { certificate_pem: "CERT", key_pem: Some("KEY") },
        );
        let parsed: serde_norway::Value = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(parsed["apiVersion"], "v1");
        assert_eq!(parsed["kind"], "Config");
        assert_eq!(parsed["current-context"], "alice@prod");
        assert_eq!(parsed["clusters"][0]["cluster"]["certificate-authority-data"], STANDARD.encode("CA"));
        let user = parsed["users"][0]["user"].as_mapping().unwrap();
        assert_eq!(user.len(), 2);
        assert!(user.values().all(|v| v.is_string()));
    }

    #[test]
    fn an_exec_kubeconfig_never_prompts() {
        let cluster =
            ClusterEndpoint { name: "prod", server: "https://k8s.example:6443", ca_bundle_pem: "CA" };
        let credential = UserCredential::Exec {
            command: "kca",
            args: vec!["kubeconfig".into()],
            install_hint: "install kca",
        };
        let yaml = render(&cluster, "alice", &credential);
        let parsed: serde_norway::Value = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(parsed["users"][0]["user"]["exec"]["interactiveMode"], "Never");
    }
}
