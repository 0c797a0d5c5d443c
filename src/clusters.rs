//! Creating and changing clusters: validation of what a client sends, and the five CAs (with
//! their first, empty CRLs) made for each new cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::keyring::{Keyring, KeyringError};
use crate::names::{FieldError, validate_cluster_name};
use crate::pki::ca::{AuthorityIdentity, BACKDATE};
use crate::pki::crl::{CrlWindow, RevokedEntry, sign_crl};
use crate::pki::{AuthorityKind, CaSigner, KeyAlgorithm, KeyStorage, PkiError, fingerprint_sha256};
use crate::policy::IssuancePolicy;
use crate::store::{AuthorityRecord, AuthorityState, ClusterRecord, CrlRecord, NewCluster, SignedCrl};

/// The CRL window starting now: thisUpdate backdated for clock skew, nextUpdate `validity` later.
pub fn crl_window(number: u64, now: OffsetDateTime, validity: Duration) -> CrlWindow {
    let this_update = (now - BACKDATE).replace_nanosecond(0).expect("0 is a valid nanosecond");
    CrlWindow { number, this_update, next_update: this_update + validity }
}

/// Sign a CRL for `ca` now; used for first CRLs and by every re-publication.
pub fn sign_crl_now(
    ca: &CaSigner,
    number: u64,
    entries: &[RevokedEntry],
    now: OffsetDateTime,
    validity: Duration,
) -> Result<SignedCrl, PkiError> {
    let window = crl_window(number, now, validity);
    let der = sign_crl(ca, window, entries)?;
    Ok(SignedCrl { der, this_update: window.this_update, next_update: window.next_update })
}

/// `https://host[:port][/path]`: where kube-apiserver listens; it goes into kubeconfigs. Answers
/// the URL in normal form, which is what is stored: the parsed URL (host lowercased, IDNA to
/// punycode, default port dropped, path percent-encoded), without the `/` the parser gives an
/// empty path unless the client wrote it.
pub fn validate_server_url(server: &str) -> Result<String, FieldError> {
    let invalid = |detail: &str| FieldError::new("server", detail);
    if server.len() > 2048 {
        return Err(invalid("must be at most 2048 characters"));
    }
    // Checked on the raw text: the URL parser silently drops leading and trailing C0 controls and
    // spaces (and tabs and newlines anywhere), so the text as sent could differ from the URL
    // checked; and U+2028/U+2029 are line breaks to YAML and JavaScript.
    if server.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid("must not contain control characters, whitespace or line separators"));
    }
    let url = url::Url::parse(server).map_err(|e| invalid(&format!("not a URL: {e}")))?;
    if url.scheme() != "https" {
        return Err(invalid("must be an https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not carry credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or fragment"));
    }
    let mut normal = url.as_str();
    if url.path() == "/" && !server.ends_with('/') {
        normal = normal.strip_suffix('/').unwrap_or(normal);
    }
    if normal.len() > 2048 {
        return Err(invalid("must be at most 2048 characters"));
    }
    Ok(normal.to_string())
}

/// Up to 64 labels; keys of 1-63 characters `[A-Za-z0-9._/-]`, values up to 256 printable characters.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), FieldError> {
    if labels.len() > 64 {
        return Err(FieldError::new("labels", "at most 64 labels"));
    }
    for (key, value) in labels {
        let key_ok = !key.is_empty()
            && key.len() <= 63
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
        if !key_ok {
            return Err(FieldError::new(
                format!("labels.{key}"),
                "label keys are 1-63 characters of letters, digits, '.', '_', '-' or '/'",
            ));
        }
        if value.chars().count() > 256 || value.chars().any(char::is_control) {
            return Err(FieldError::new(
                format!("labels.{key}"),
                "label values are at most 256 characters, without control characters",
            ));
        }
    }
    Ok(())
}

/// What a client asks for when creating a cluster, validated.
#[derive(Debug, Clone)]
pub struct ClusterDraft {
    pub name: String,
    pub server: String,
    pub policy: IssuancePolicy,
    pub labels: BTreeMap<String, String>,
    pub key_algorithm: KeyAlgorithm,
    pub key_storage: KeyStorage,
}

impl ClusterDraft {
    /// Check every field; the server URL is replaced by its normal form.
    pub fn validate(&mut self) -> Result<(), FieldError> {
        validate_cluster_name(&self.name)?;
        self.server = validate_server_url(&self.server)?;
        self.policy.validate()?;
        validate_labels(&self.labels)?;
        validate_key_storage(self.key_storage, self.key_algorithm)
    }
}

/// A token keeps EC keys only.
pub fn validate_key_storage(storage: KeyStorage, algorithm: KeyAlgorithm) -> Result<(), FieldError> {
    if storage == KeyStorage::Pkcs11 && !crate::pkcs11::supports(algorithm) {
        return Err(FieldError::new(
            "key_storage",
            format!("{algorithm} keys cannot be kept in a PKCS#11 token; use p256 or p384"),
        ));
    }
    Ok(())
}

/// A new cluster ready to store, and the signers of its authorities to keep in memory.
pub struct BuiltCluster {
    pub new: NewCluster,
    pub signers: Vec<(Uuid, Arc<CaSigner>)>,
}

/// One authority generation: its record (its key sealed under the master key, bound to its id,
/// or in the token), its first (empty) CRL, and its signer.
pub struct BuiltAuthority {
    pub record: AuthorityRecord,
    pub crl: CrlRecord,
    pub signer: Arc<CaSigner>,
}

/// Make generation `generation` of a cluster's `kind` CA, its key in `storage`. Blocking.
pub fn build_authority(
    cluster: &ClusterRecord,
    kind: AuthorityKind,
    generation: i32,
    storage: KeyStorage,
    keyring: &Keyring,
    now: OffsetDateTime,
    crl_validity: Duration,
) -> Result<BuiltAuthority, KeyringError> {
    let cluster_id = cluster.id.to_string();
    let identity =
        AuthorityIdentity { cluster_name: &cluster.name, cluster_id: &cluster_id, kind, generation };
    let authority_id = Uuid::new_v4();
    let (signer, key) =
        keyring.create_authority(storage, authority_id, &identity, cluster.key_algorithm, now)?;
    let number = crate::pki::crl::crl_number_floor(now);
    let signed = sign_crl_now(&signer, number as u64, &[], now, crl_validity);
    let signed = match signed {
        Ok(signed) => signed,
        Err(err) => {
            if let Some(reference) = &key.reference {
                keyring.token()?.destroy(reference);
            }
            return Err(err.into());
        }
    };
    let crl = CrlRecord {
        authority_id,
        number,
        this_update: signed.this_update,
        next_update: signed.next_update,
        entries: 0,
        der: signed.der,
    };
    let record = AuthorityRecord {
        id: authority_id,
        cluster_id: cluster.id,
        kind,
        generation,
        state: AuthorityState::Active,
        subject: signer.subject_text(),
        fingerprint: fingerprint_sha256(signer.certificate_der()),
        key_algorithm: cluster.key_algorithm,
        key_storage: key.storage,
        key_reference: key.reference,
        sealed_key: key.sealed_key,
        key_version: key.key_version,
        previous_seal: None,
        not_before: signer.not_before(),
        not_after: signer.not_after(),
        created_at: now,
        certificate_der: signer.certificate_der().to_vec(),
    };
    Ok(BuiltAuthority { record, crl, signer: Arc::new(signer) })
}

/// Make the five first-generation authorities of a new cluster and their first CRLs, their keys
/// in the storage the draft chose. Blocking. A failure part-way destroys the token keys made.
pub fn build_cluster(
    draft: ClusterDraft,
    keyring: &Keyring,
    now: OffsetDateTime,
    crl_validity: Duration,
) -> Result<BuiltCluster, KeyringError> {
    let cluster = ClusterRecord {
        id: Uuid::new_v4(),
        name: draft.name,
        server: draft.server,
        key_algorithm: draft.key_algorithm,
        key_storage: draft.key_storage,
        policy: draft.policy,
        labels: draft.labels,
        created_at: now,
        updated_at: now,
        version: 1,
    };
    let mut authorities = Vec::with_capacity(AuthorityKind::ALL.len());
    let mut crls = Vec::with_capacity(AuthorityKind::ALL.len());
    let mut signers = Vec::with_capacity(AuthorityKind::ALL.len());
    for kind in AuthorityKind::ALL {
        let built = match build_authority(&cluster, kind, 1, draft.key_storage, keyring, now, crl_validity) {
            Ok(built) => built,
            Err(err) => {
                keyring.discard(&authorities);
                return Err(err);
            }
        };
        signers.push((built.record.id, built.signer));
        authorities.push(built.record);
        crls.push(built.crl);
    }
    Ok(BuiltCluster { new: NewCluster { cluster, authorities, crls }, signers })
}

/// A change of a cluster: JSON merge patches (RFC 7396) of its policy and labels, and a new server.
#[derive(Debug, Clone, Default)]
pub struct ClusterChange {
    pub server: Option<String>,
    pub policy: Option<serde_json::Value>,
    pub labels: Option<serde_json::Value>,
}

impl ClusterChange {
    /// `current` with the change applied and validated (`updated_at` moves only if it differs).
    pub fn apply(&self, current: &ClusterRecord, now: OffsetDateTime) -> Result<ClusterRecord, FieldError> {
        let mut updated = current.clone();
        if let Some(server) = &self.server {
            updated.server = validate_server_url(server)?;
        }
        if let Some(policy_patch) = &self.policy {
            let mut policy = serde_json::to_value(&current.policy).expect("a policy serializes");
            merge_patch(&mut policy, policy_patch.clone());
            updated.policy = serde_json::from_value::<IssuancePolicy>(policy)
                .map_err(|e| FieldError::new("policy", format!("invalid policy: {e}")))?;
            updated.policy.validate()?;
        }
        if let Some(labels_patch) = &self.labels {
            let mut labels = serde_json::to_value(&current.labels).expect("labels serialize");
            merge_patch(&mut labels, labels_patch.clone());
            updated.labels = serde_json::from_value::<BTreeMap<String, String>>(labels)
                .map_err(|e| FieldError::new("labels", format!("labels must map strings to strings: {e}")))?;
            validate_labels(&updated.labels)?;
        }
        if updated != *current {
            updated.updated_at = now;
        }
        Ok(updated)
    }
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut serde_json::Value, patch: serde_json::Value) {
    match patch {
        serde_json::Value::Object(entries) => {
            if !target.is_object() {
                *target = serde_json::Value::Object(Default::default());
            }
            let map = target.as_object_mut().expect("made an object above");
            for (key, value) in entries {
                if value.is_null() {
                    map.remove(&key);
                } else {
                    merge_patch(map.entry(key).or_insert(serde_json::Value::Null), value);
                }
            }
        }
        other => *target = other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = serde_json::json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut target, serde_json::json!({"a": "z", "c": {"f": null}}));
        assert_eq!(target, serde_json::json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn server_urls_must_be_https_with_a_host() {
        assert!(validate_server_url("https://10.0.0.1:6443").is_ok());
        assert!(validate_server_url("https://k8s.example.com").is_ok());
        for bad in ["http://k8s:6443", "k8s:6443", "https://user:pw@k8s", "https://k8s/?a=b", "ftp://x"] {
            assert!(validate_server_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_urls_with_control_characters_or_separators_are_refused() {
        for bad in [
            "https://k8s:6443\n",
            "https://k8s:6443\r\n",
            "https://k8s:6443\u{2028}",
            "https://k8s:6443/\u{2029}",
            "https://k8s:6443/a\tb",
            "\u{0}https://k8s:6443",
            " https://k8s:6443",
            "https://k8s:6443 ",
            "https://k8s:6443/\u{7f}",
            "https://k8s:6443/\u{85}",
            "https://k8s:6443/\u{a0}",
            "https://k\n8s:6443",
        ] {
            let err = validate_server_url(bad).expect_err(bad);
            assert_eq!(err.field, "server");
            assert!(err.detail.contains("control characters"), "{bad:?}: {}", err.detail);
        }
    }

    #[test]
    fn server_urls_are_stored_in_normal_form() {
        for (given, stored) in [
            ("https://k8s.example:6443", "https://k8s.example:6443"),
            ("https://k8s.example:6443/", "https://k8s.example:6443/"),
            ("https://K8S.Example:443", "https://k8s.example"),
            ("https://10.0.0.1:6443/proxy/a/../b", "https://10.0.0.1:6443/proxy/b"),
            ("https://[::1]:6443", "https://[::1]:6443"),
            ("https://bücher.example:6443", "https://xn--bcher-kva.example:6443"),
            ("https://k8s:6443/%7euser/é", "https://k8s:6443/%7euser/%C3%A9"),
        ] {
            assert_eq!(validate_server_url(given).as_deref(), Ok(stored), "{given}");
            // The normal form is its own normal form.
            assert_eq!(validate_server_url(stored).as_deref(), Ok(stored), "{stored}");
        }
        let mut draft = ClusterDraft {
            name: "prod".into(),
            server: "https://K8S:6443".into(),
            policy: IssuancePolicy::default(),
            labels: BTreeMap::new(),
            key_algorithm: KeyAlgorithm::P256,
            key_storage: KeyStorage::Sealed,
        };
        draft.validate().unwrap();
        assert_eq!(draft.server, "https://k8s:6443");
    }

    #[test]
    fn a_built_cluster_has_five_sealed_authorities_each_with_an_empty_crl() {
        use crate::keyring::authority_aad;
        use crate::pki::seal::MasterKey;
        let (master, bytes) = MasterKey::generate().unwrap();
        let keyring = Keyring::new(MasterKey::from_bytes(&bytes, 1).unwrap());
        let draft = ClusterDraft {
            name: "prod".into(),
            server: "https://k8s:6443".into(),
            policy: IssuancePolicy::default(),
            labels: BTreeMap::new(),
            key_algorithm: KeyAlgorithm::P256,
            key_storage: KeyStorage::Sealed,
        };
        let now = OffsetDateTime::now_utc();
        let built = build_cluster(draft, &keyring, now, Duration::from_secs(86_400)).unwrap();
        assert_eq!(built.new.authorities.len(), 5);
        assert_eq!(built.new.crls.len(), 5);
        for authority in &built.new.authorities {
            assert_eq!(authority.key_storage, KeyStorage::Sealed);
            assert_eq!(authority.key_reference, None);
            let opened = master.open(&authority.sealed_key, &authority_aad(authority.id)).unwrap();
            assert!(CaSigner::load(&authority.certificate_der, authority.key_algorithm, &opened).is_ok());
        }
    }
}
