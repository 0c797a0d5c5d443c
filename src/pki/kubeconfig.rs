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

/// A YAML double-quoted scalar. Every value (names come from clients) is written quoted, with
/// everything outside YAML's printable set escaped, so it can never break the document.
fn scalar(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    // Most values (base64 certificates and keys, URLs, names) are printable ASCII with nothing to
    // escape: checked a byte at a time, they are copied whole.
    if value.bytes().all(|b| matches!(b, b' '..=b'~') && b != b'"' && b != b'\\') {
        out.push_str(value);
        out.push('"');
        return out;
    }
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            // U+2028 and U+2029 are line breaks to YAML 1.1 parsers (libyaml, go-yaml): folded, not kept.
            ' '..='~' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..
                if !matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}') =>
            {
                out.push(c)
            }
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Render a kubeconfig with one cluster, one user and one current context `<user>@<cluster>`.
///
/// Written directly rather than through a YAML serializer: this is on the issuance hot path, and
/// the document's shape is fixed.
pub fn render(cluster: &ClusterEndpoint<'_>, user_name: &str, credential: &UserCredential<'_>) -> String {
    use std::fmt::Write;
    let context = format!("{user_name}@{}", cluster.name);
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {}\n  cluster:\n    certificate-authority-data: {}\n    \
         server: {}\nusers:\n- name: {}\n  user:\n",
        scalar(cluster.name),
        scalar(&STANDARD.encode(cluster.ca_bundle_pem)),
        scalar(cluster.server),
        scalar(user_name),
    );
    match credential {
        UserCredential::Certificate { certificate_pem, key_pem } => {
            let _ =
                writeln!(out, "    client-certificate-data: {}", scalar(&STANDARD.encode(certificate_pem)));
            if let Some(key) = key_pem {
                let _ = writeln!(out, "    client-key-data: {}", scalar(&STANDARD.encode(key)));
            }
        }
        UserCredential::Exec { command, args, install_hint } => {
            let _ = write!(
                out,
                "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {}\n      args:\n",
                scalar(command)
            );
            for arg in args {
                let _ = writeln!(out, "      - {}", scalar(arg));
            }
            let _ = write!(
                out,
                "      interactiveMode: Never\n      provideClusterInfo: false\n      installHint: {}\n",
                scalar(install_hint)
            );
        }
    }
    let _ = write!(
        out,
        "contexts:\n- name: {}\n  context:\n    cluster: {}\n    user: {}\ncurrent-context: {}\npreferences: {{}}\n",
        scalar(&context),
        scalar(cluster.name),
        scalar(user_name),
        scalar(&context),
    );
    out
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
    fn hostile_names_cannot_change_the_document() {
        let cluster = ClusterEndpoint { name: "prod", server: "https://k:6443", ca_bundle_pem: "CA" };
        for user in [
            "a: b",
            "- x",
            "#comment",
            "\"quoted\"",
            "back\\slash",
            "tab\there",
            "multi\nline",
            "{a}",
            "ü\u{7f}",
            "&anchor *alias",
        ] {
            let yaml =
                render(&cluster, user, &UserCredential::Certificate { certificate_pem: "C", key_pem: None });
            let parsed: serde_norway::Value = serde_norway::from_str(&yaml).unwrap();
            assert_eq!(parsed["users"][0]["name"], user);
            assert_eq!(parsed["contexts"][0]["context"]["user"], user);
            assert_eq!(parsed["users"].as_sequence().unwrap().len(), 1);
            assert!(parsed["users"][0]["user"].get("client-key-data").is_none());
        }
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
        assert_eq!(parsed["users"][0]["user"]["exec"]["args"][0], "kubeconfig");
        assert_eq!(parsed["users"][0]["user"]["exec"]["apiVersion"], "client.authentication.k8s.io/v1");
    }
}
