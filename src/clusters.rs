//! Creating and changing clusters: validation of what a client sends, and the five CAs (with
//! their first, empty CRLs) made for each new cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::keyring::{Keyring, KeyringError, StoredKey, authority_aad, service_account_aad};
use crate::names::{FieldError, validate_cluster_name};
use crate::pki::ca::{AuthorityIdentity, BACKDATE};
use crate::pki::crl::{CrlWindow, RevokedEntry, sign_crl};
use crate::pki::import::ImportedAuthority;
use crate::pki::intermediate::{AcceptedIntermediate, chain_pem, request_intermediate};
use crate::pki::seal::MasterKey;
use crate::pki::service_account::ServiceAccountKey;
use crate::pki::{AuthorityKind, CaSigner, KeyAlgorithm, KeyStorage, PkiError, fingerprint_sha256};
use crate::policy::IssuancePolicy;
use crate::store::{
    AuthorityRecord, AuthorityState, ClusterRecord, CrlRecord, NewCluster, PendingAuthorityRecord,
    ServiceAccountKeyRecord, SignedCrl,
};

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
    /// Where the keys kca generates for the cluster's CAs are kept (imported CAs stay sealed).
    pub key_storage: KeyStorage,
    /// Existing CAs to adopt instead of generating those kinds.
    pub imports: Vec<(AuthorityKind, CaImport)>,
    /// An existing service-account signing key (`sa.key`) to start with.
    pub service_account_key: Option<SecretPem>,
}

/// A private key as PEM: wiped from memory when dropped, never printed.
#[derive(Clone)]
pub struct SecretPem(pub zeroize::Zeroizing<String>);

impl std::fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretPem(..)")
    }
}

/// An existing CA offered for import, as PEM. The key is wiped from memory when dropped and never
/// printed.
#[derive(Clone)]
pub struct CaImport {
    pub certificate_pem: String,
    pub private_key_pem: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for CaImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaImport").field("certificate_pem", &self.certificate_pem).finish_non_exhaustive()
    }
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
    let parts = AuthorityParts {
        id: authority_id,
        certificate_der: signer.certificate_der().to_vec(),
        chain_pem: String::new(),
        key,
        algorithm: cluster.key_algorithm,
        signer,
    };
    assemble_authority(cluster, kind, generation, parts, now, crl_validity).map_err(|(err, key)| {
        // Nothing will refer to a key made in the token for it.
        if let (Some(reference), Ok(token)) = (&key.reference, keyring.token()) {
            token.destroy(reference);
        }
        err.into()
    })
}

/// Make generation `generation` of a cluster's `kind` CA from an imported one (checked by
/// `crate::pki::import`): its key is sealed here like a generated one.
pub fn build_imported_authority(
    cluster: &ClusterRecord,
    kind: AuthorityKind,
    generation: i32,
    imported: ImportedAuthority,
    master: &MasterKey,
    now: OffsetDateTime,
    crl_validity: Duration,
) -> Result<BuiltAuthority, PkiError> {
    let id = Uuid::new_v4();
    let key = StoredKey {
        storage: KeyStorage::Sealed,
        sealed_key: master.seal(&imported.pkcs8, &authority_aad(id))?,
        key_version: master.version(),
        reference: None,
    };
    let parts = AuthorityParts {
        id,
        certificate_der: imported.certificate_der,
        chain_pem: String::new(),
        key,
        algorithm: imported.algorithm,
        signer: imported.signer,
    };
    assemble_authority(cluster, kind, generation, parts, now, crl_validity).map_err(|(err, _)| err)
}

/// A key and CSR for generation `generation` of a cluster's `kind` as an intermediate under the
/// organisation's root; the key is sealed bound to the pending record's id, which becomes the
/// authority's id once its certificate is installed.
pub fn build_pending_authority(
    cluster: &ClusterRecord,
    kind: AuthorityKind,
    generation: i32,
    master: &MasterKey,
    now: OffsetDateTime,
) -> Result<PendingAuthorityRecord, PkiError> {
    let cluster_id = cluster.id.to_string();
    let identity =
        AuthorityIdentity { cluster_name: &cluster.name, cluster_id: &cluster_id, kind, generation };
    let request = request_intermediate(&identity, cluster.key_algorithm)?;
    let id = Uuid::new_v4();
    Ok(PendingAuthorityRecord {
        id,
        cluster_id: cluster.id,
        kind,
        key_algorithm: cluster.key_algorithm,
        sealed_key: master.seal(&request.pkcs8, &authority_aad(id))?,
        key_version: master.version(),
        csr_der: request.csr_der,
        created_at: now,
        previous_seal: None,
    })
}

/// The authority record of a signed intermediate: the pending key (sealed as it is, under the
/// pending id), its certificate and chain, and a first, empty CRL.
pub fn build_intermediate_authority(
    pending: &PendingAuthorityRecord,
    generation: i32,
    accepted: AcceptedIntermediate,
    now: OffsetDateTime,
    crl_validity: Duration,
) -> Result<BuiltAuthority, PkiError> {
    let number = crate::pki::crl::crl_number_floor(now);
    let signed = sign_crl_now(&accepted.signer, number as u64, &[], now, crl_validity)?;
    let crl = CrlRecord {
        authority_id: pending.id,
        number,
        this_update: signed.this_update,
        next_update: signed.next_update,
        entries: 0,
        der: signed.der,
    };
    let record = AuthorityRecord {
        id: pending.id,
        cluster_id: pending.cluster_id,
        kind: pending.kind,
        generation,
        state: AuthorityState::Active,
        subject: accepted.signer.subject_text(),
        fingerprint: fingerprint_sha256(&accepted.certificate_der),
        key_algorithm: pending.key_algorithm,
        key_storage: KeyStorage::Sealed,
        key_reference: None,
        sealed_key: pending.sealed_key.clone(),
        key_version: pending.key_version,
        previous_seal: pending.previous_seal.clone(),
        not_before: accepted.signer.not_before(),
        not_after: accepted.signer.not_after(),
        created_at: now,
        certificate_der: accepted.certificate_der,
        chain_pem: chain_pem(&accepted.chain_der),
    };
    Ok(BuiltAuthority { record, crl, signer: Arc::new(accepted.signer) })
}

struct AuthorityParts {
    /// The authority's id, which its key (sealed, or in the token) is bound to.
    id: Uuid,
    certificate_der: Vec<u8>,
    chain_pem: String,
    key: StoredKey,
    algorithm: KeyAlgorithm,
    signer: CaSigner,
}

/// The record and first, empty CRL of a CA; on failure, the key it was given back.
fn assemble_authority(
    cluster: &ClusterRecord,
    kind: AuthorityKind,
    generation: i32,
    parts: AuthorityParts,
    now: OffsetDateTime,
    crl_validity: Duration,
) -> Result<BuiltAuthority, (PkiError, StoredKey)> {
    let authority_id = parts.id;
    let number = crate::pki::crl::crl_number_floor(now);
    let signed = match sign_crl_now(&parts.signer, number as u64, &[], now, crl_validity) {
        Ok(signed) => signed,
        Err(err) => return Err((err, parts.key)),
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
        subject: parts.signer.subject_text(),
        fingerprint: fingerprint_sha256(&parts.certificate_der),
        key_algorithm: parts.algorithm,
        key_storage: parts.key.storage,
        key_reference: parts.key.reference,
        sealed_key: parts.key.sealed_key,
        key_version: parts.key.key_version,
        previous_seal: None,
        not_before: parts.signer.not_before(),
        not_after: parts.signer.not_after(),
        created_at: now,
        certificate_der: parts.certificate_der,
        chain_pem: parts.chain_pem,
    };
    Ok(BuiltAuthority { record, crl, signer: Arc::new(parts.signer) })
}

/// Make the five first-generation authorities of a new cluster and their first CRLs, their keys
/// in the storage the draft chose; the kinds in `imported` are made from those CAs instead (their
/// keys sealed). Blocking. A failure part-way destroys the token keys made.
pub fn build_cluster(
    draft: ClusterDraft,
    imported: Vec<(AuthorityKind, ImportedAuthority)>,
    service_account: Option<ServiceAccountKey>,
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
    let result = (|| {
        let mut imported = imported;
        for kind in AuthorityKind::ALL {
            let built = match imported.iter().position(|(k, _)| *k == kind) {
                Some(at) => {
                    let (_, ca) = imported.swap_remove(at);
                    build_imported_authority(&cluster, kind, 1, ca, keyring.master(), now, crl_validity)?
                }
                None => build_authority(&cluster, kind, 1, draft.key_storage, keyring, now, crl_validity)?,
            };
            signers.push((built.record.id, built.signer));
            authorities.push(built.record);
            crls.push(built.crl);
        }
        service_account
            .map(|key| service_account_key_record(cluster.id, &key, keyring.master(), now))
            .transpose()
            .map_err(KeyringError::from)
    })();
    let service_account_keys = match result {
        Ok(key) => key.into_iter().collect(),
        Err(err) => {
            keyring.discard(&authorities);
            return Err(err);
        }
    };
    Ok(BuiltCluster { new: NewCluster { cluster, authorities, crls, service_account_keys }, signers })
}

/// The record of a cluster's new signing service-account key, sealed under `master` bound to a
/// new id.
pub fn service_account_key_record(
    cluster_id: Uuid,
    key: &ServiceAccountKey,
    master: &MasterKey,
    now: OffsetDateTime,
) -> Result<ServiceAccountKeyRecord, PkiError> {
    let id = Uuid::new_v4();
    Ok(ServiceAccountKeyRecord {
        id,
        cluster_id,
        key_id: key.key_id.clone(),
        state: AuthorityState::Active,
        key_algorithm: key.algorithm,
        sealed_key: master.seal(&key.pkcs8, &service_account_aad(id))?,
        key_version: master.version(),
        public_pem: key.public_pem.clone(),
        created_at: now,
        previous_seal: None,
    })
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
            imports: Vec::new(),
            service_account_key: None,
        };
        draft.validate().unwrap();
        assert_eq!(draft.server, "https://k8s:6443");
    }

    #[test]
    fn a_built_cluster_has_five_sealed_authorities_each_with_an_empty_crl() {
        let (master, bytes) = MasterKey::generate().unwrap();
        let keyring = Keyring::new(MasterKey::from_bytes(&bytes, 1).unwrap());
        let draft = ClusterDraft {
            name: "prod".into(),
            server: "https://k8s:6443".into(),
            policy: IssuancePolicy::default(),
            labels: BTreeMap::new(),
            key_algorithm: KeyAlgorithm::P256,
            key_storage: KeyStorage::Sealed,
            imports: Vec::new(),
            service_account_key: None,
        };
        let now = OffsetDateTime::now_utc();
        let built =
            build_cluster(draft, Vec::new(), None, &keyring, now, Duration::from_secs(86_400)).unwrap();
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
