//! Issuing certificates: the policy decisions for user and component certificates, and signing.
//!
//! Decisions are pure functions of the cluster policy, the token and the request, so every rule is
//! tested without a server.

pub mod component;
#[cfg(test)]
mod kubeadm_table;
pub mod user;

use std::time::Duration;

use time::OffsetDateTime;

pub use component::{ComponentRequest, DeclaredNames, decide_component};
pub use user::{UserRequest, decide_user_certificate};

use crate::names::{FieldError, glob_match, is_privileged_group};
use crate::pki::ca::BACKDATE;
use crate::pki::csr::{CsrKeyType, verify_csr_pem};
use crate::pki::leaf::{ExtendedUsage, IssuedLeaf, LeafSpec, issue_leaf};
use crate::pki::{CaSigner, KeyAlgorithm, PkiError, Serial, SigningKeyPair, keys::private_key_pem};
use crate::token::Claims;

/// Why a request is refused: an invalid value (422) or a rule of the policy or token (403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Invalid { field: String, detail: String },
    Policy { rule: &'static str, field: String, detail: String },
}

impl Refusal {
    pub(crate) fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Refusal::Invalid { field: field.into(), detail: detail.into() }
    }

    pub(crate) fn policy(rule: &'static str, field: impl Into<String>, detail: impl Into<String>) -> Self {
        Refusal::Policy { rule, field: field.into(), detail: detail.into() }
    }
}

pub(super) fn privileged_needs_admin(field: &str, identity: &str) -> Refusal {
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
pub(super) fn token_allows_group(claims: &Claims, group: &str) -> bool {
    match &claims.groups {
        None => true,
        Some(patterns) if is_privileged_group(group) => patterns.iter().any(|p| p == group),
        Some(patterns) => patterns.iter().any(|p| glob_match(p, group)),
    }
}

pub(super) fn check_token_max_ttl(claims: &Claims, ttl: u64) -> Result<(), Refusal> {
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
        return Err(PkiError::OutlivesCa(ca.not_after()));
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

/// The claims of a token with `scopes` for every cluster, for the decision tests.
#[cfg(test)]
pub(crate) fn test_claims(scopes: &[crate::token::Scope]) -> Claims {
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
        person: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::AuthorityKind;
    use crate::pki::ca::{AuthorityIdentity, create_authority};

    #[test]
    fn a_certificate_never_outlives_its_ca_and_the_request_is_told_why() {
        // A CA made almost ten years ago: it expires within days.
        let now = OffsetDateTime::now_utc();
        let identity = AuthorityIdentity {
            cluster_name: "old",
            cluster_id: "id",
            kind: AuthorityKind::Operators,
            generation: 1,
        };
        let ca = create_authority(&identity, KeyAlgorithm::P256, now - time::Duration::days(3650 - 3))
            .unwrap()
            .signer;
        let usage = |days: u64| Usage::user("alice".into(), vec![], Duration::from_secs(days * 86_400));
        let key = SubjectKey::Generate(KeyAlgorithm::P256);
        assert!(sign(&ca, &key, &usage(1), now).is_ok());
        match sign(&ca, &key, &usage(30), now) {
            Err(PkiError::OutlivesCa(at)) => assert_eq!(at, ca.not_after()),
            Err(other) => panic!("expected OutlivesCa, got {other}"),
            Ok(_) => panic!("a certificate outliving its CA was signed"),
        }
    }
}
