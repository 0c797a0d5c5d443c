//! The storage conformance suite: every behaviour of the `Store` interface, checked at the trait
//! level (no HTTP server) against SQLite and Postgres alike, so the two backends cannot drift.

use std::sync::Arc;
use std::time::Duration;

use kca::clusters::{ClusterDraft, build_cluster};
use kca::pki::crl::{RevocationReason, RevokedEntry};
use kca::pki::seal::MasterKey;
use kca::pki::{AuthorityKind, KeyAlgorithm, Serial};
use kca::store::{
    AuditEntry, AuthorityState, CertificateFilter, CertificateRecord, CertificateStatus, NewCluster,
    PreviousSeal, RevokedSet, RewrapCounts, SealedOwner, SignedCrl, Store, StoreError, TokenRecord,
};
use kca::token::Scope;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::common::*;
use crate::on_both_backends;

on_both_backends!(
    settings_keep_the_first_value,
    clusters_are_created_found_listed_changed_and_deleted,
    authorities_rotate_and_retire,
    certificates_are_recorded_listed_and_revoked,
    crl_numbers_strictly_increase_and_list_what_is_revoked,
    a_kept_revoked_set_reads_only_new_revocations_and_lists_what_a_full_read_does,
    the_audit_trail_filters_by_cluster_and_pages,
    tokens_and_their_keys,
    pending_intermediates_are_replaced_and_installed_once,
    service_account_keys_overlap_and_retire,
    sealed_keys_are_rewrapped_and_previous_seals_dropped,
    token_keys_are_stored_by_reference_and_never_rewrapped,
    backup_rows_restore_into_an_empty_store_of_either_backend,
);

/// An authority whose key is in a PKCS#11 token is stored with its reference and no sealed key,
/// reads back as it was, and is left alone by a rewrap (nothing of it is sealed).
async fn token_keys_are_stored_by_reference_and_never_rewrapped(backend: Backend) {
    let f = open(backend).await;
    let store = f.store.as_ref();
    let mut new = new_cluster("in-token");
    new.cluster.key_storage = kca::pki::KeyStorage::Pkcs11;
    let in_token = new.authorities[0].id;
    new.authorities[0].key_storage = kca::pki::KeyStorage::Pkcs11;
    new.authorities[0].key_reference = Some(in_token.to_string());
    new.authorities[0].sealed_key = Vec::new();
    store.create_cluster(&new, &audit("cluster.create", Some(new.cluster.id))).await.unwrap();
    assert_eq!(store.find_cluster("in-token").await.unwrap(), new.cluster);
    let stored = store.list_authorities(new.cluster.id).await.unwrap();
    for authority in &new.authorities {
        assert_eq!(stored.iter().find(|a| a.id == authority.id), Some(authority));
    }
    let reseal = |owner: SealedOwner, sealed: &[u8]| -> Result<Option<Vec<u8>>, kca::pki::PkiError> {
        assert_ne!(owner, SealedOwner::Authority(in_token), "a token key was offered for resealing");
        Ok(Some([b"v2:".as_slice(), sealed].concat()))
    };
    let counts = store.rewrap_sealed_keys(2, &reseal, &audit("keys.rewrap", None)).await.unwrap();
    assert_eq!(counts.authorities, 4);
    let after = store.list_authorities(new.cluster.id).await.unwrap();
    let untouched = after.iter().find(|a| a.id == in_token).unwrap();
    assert_eq!((untouched.sealed_key.as_slice(), untouched.previous_seal.as_ref()), (&[][..], None));
    let check = |owner: SealedOwner, _: &[u8]| -> Result<(), kca::pki::PkiError> {
        assert_ne!(owner, SealedOwner::Authority(in_token), "a token key was checked as sealed");
        Ok(())
    };
    store.drop_previous_seals(&check, &audit("keys.drop_previous", None)).await.unwrap();
}

/// A fresh, migrated store of `backend`, kept alive with what it lives in.
struct Fixture {
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
    _database: Option<PgDatabase>,
}

async fn open(backend: Backend) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let database = (backend == Backend::Postgres).then(PgDatabase::create);
    let url = match &database {
        Some(db) => db.url.clone(),
        None => format!("sqlite://{}", dir.path().join("kca.db").display()),
    };
    let store = kca::store::connect(&url, 4).await.unwrap();
    store.migrate().await.unwrap();
    Fixture { store, _dir: dir, _database: database }
}

fn now() -> OffsetDateTime {
    // The microsecond precision both databases keep.
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000).unwrap()
}

fn audit(action: &str, cluster_id: Option<Uuid>) -> AuditEntry {
    AuditEntry {
        at: now(),
        actor: "conformance".into(),
        action: action.into(),
        object_type: "test".into(),
        object_id: action.into(),
        cluster_id,
        remote_addr: Some("127.0.0.1".into()),
        details: serde_json::json!({"action": action}),
    }
}

fn new_cluster(name: &str) -> NewCluster {
    let (master, _) = MasterKey::generate().unwrap();
    let draft = ClusterDraft {
        name: name.into(),
        server: "https://k8s.example:6443".into(),
        policy: Default::default(),
        labels: [("env".to_string(), "test".to_string())].into(),
        key_algorithm: KeyAlgorithm::P256,
        key_storage: kca::pki::KeyStorage::Sealed,
        imports: Vec::new(),
        service_account_key: None,
    };
    build_cluster(
        draft,
        Vec::new(),
        None,
        &kca::keyring::Keyring::new(master),
        now(),
        Duration::from_secs(86_400),
    )
    .unwrap()
    .new
}

fn certificate(
    new: &NewCluster,
    kind: AuthorityKind,
    user: &str,
    not_after: OffsetDateTime,
) -> CertificateRecord {
    let authority = new.authorities.iter().find(|a| a.kind == kind).unwrap();
    CertificateRecord {
        serial: Serial::random().unwrap().to_hex(),
        cluster_id: new.cluster.id,
        authority_id: authority.id,
        kind,
        generation: authority.generation,
        profile: "user".into(),
        common_name: user.into(),
        groups: vec!["dev".into(), "ops".into()],
        dns_names: vec![],
        ip_addresses: vec![],
        not_before: now() - time::Duration::minutes(5),
        not_after,
        fingerprint: "AB".repeat(32),
        certificate_der: vec![0x30, 0x03, 0x02, 0x01, 0x01],
        issued_by: "conformance".into(),
        created_at: now(),
        revoked_at: None,
        revocation_reason: None,
    }
}

/// A CRL signer that signs nothing: the store's part is numbering and choosing entries.
fn fake_signer(
    seen: &std::sync::Mutex<Vec<(u64, Vec<RevokedEntry>)>>,
) -> impl Fn(u64, &[RevokedEntry]) -> Result<SignedCrl, kca::pki::PkiError> + Send + Sync + '_ {
    move |number, entries| {
        seen.lock().unwrap().push((number, entries.to_vec()));
        Ok(SignedCrl {
            der: format!("crl {number}").into_bytes(),
            this_update: now(),
            next_update: now() + time::Duration::days(1),
        })
    }
}

async fn audit_count(store: &dyn Store) -> usize {
    store.list_audit(None, None, 1000).await.unwrap().len()
}

async fn settings_keep_the_first_value(backend: Backend) {
    let f = open(backend).await;
    assert_eq!(f.store.get_setting("k").await.unwrap(), None);
    assert_eq!(f.store.insert_setting_if_absent("k", b"first").await.unwrap(), b"first");
    assert_eq!(f.store.insert_setting_if_absent("k", b"second").await.unwrap(), b"first");
    assert_eq!(f.store.get_setting("k").await.unwrap().as_deref(), Some(&b"first"[..]));
}

async fn clusters_are_created_found_listed_changed_and_deleted(backend: Backend) {
    let f = open(backend).await;
    let store = f.store.as_ref();
    let a = new_cluster("alpha");
    let b = new_cluster("beta");
    store.create_cluster(&a, &audit("create", Some(a.cluster.id))).await.unwrap();
    store.create_cluster(&b, &audit("create", Some(b.cluster.id))).await.unwrap();
    let taken = new_cluster("alpha");
    let before = audit_count(store).await;
    assert!(matches!(
        store.create_cluster(&taken, &audit("create", None)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(audit_count(store).await, before, "a refused change writes no audit event");
    // An authority without its first CRL is refused, not stored without one.
    let mut incomplete = new_cluster("incomplete");
    incomplete.crls.pop();
    assert!(matches!(
        store.create_cluster(&incomplete, &audit("create", None)).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(store.find_cluster("incomplete").await, Err(StoreError::NotFound)));
    // Found by id and by name, equal to what was stored.
    assert_eq!(store.find_cluster(&a.cluster.id.to_string()).await.unwrap(), a.cluster);
    assert_eq!(store.find_cluster("alpha").await.unwrap(), a.cluster);
    assert!(matches!(store.find_cluster("gamma").await, Err(StoreError::NotFound)));
    // Listed by name, after a name, restricted to ids.
    let names = |list: Vec<kca::store::ClusterRecord>| list.into_iter().map(|c| c.name).collect::<Vec<_>>();
    assert_eq!(names(store.list_clusters(None, None, 10).await.unwrap()), ["alpha", "beta"]);
    assert_eq!(names(store.list_clusters(Some("alpha"), None, 10).await.unwrap()), ["beta"]);
    assert_eq!(names(store.list_clusters(None, None, 1).await.unwrap()), ["alpha"]);
    assert_eq!(names(store.list_clusters(None, Some(&[b.cluster.id]), 10).await.unwrap()), ["beta"]);
    assert!(store.list_clusters(None, Some(&[]), 10).await.unwrap().is_empty());
    // Changed.
    let mut changed = a.cluster.clone();
    changed.server = "https://other.example:6443".into();
    changed.policy.max_groups = 3;
    changed.labels.insert("team".into(), "a".into());
    changed.updated_at = now();
    store.update_cluster(&changed, &audit("update", Some(a.cluster.id))).await.unwrap();
    let stored = store.find_cluster("alpha").await.unwrap();
    assert_eq!(stored, kca::store::ClusterRecord { version: changed.version + 1, ..changed.clone() });
    // A change made from a version that is no longer current is refused, and writes nothing.
    let before = audit_count(store).await;
    assert!(matches!(
        store.update_cluster(&changed, &audit("update", None)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.delete_cluster(a.cluster.id, Some(changed.version), &audit("delete", None)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(audit_count(store).await, before);
    assert_eq!(store.find_cluster("alpha").await.unwrap(), stored);
    let mut ghost = changed.clone();
    ghost.id = Uuid::new_v4();
    assert!(matches!(store.update_cluster(&ghost, &audit("update", None)).await, Err(StoreError::NotFound)));
    // Five authorities, each with its first CRL.
    let authorities = store.list_authorities(a.cluster.id).await.unwrap();
    assert_eq!(authorities.len(), 5);
    let ids: Vec<Uuid> = authorities.iter().map(|x| x.id).collect();
    assert_eq!(store.current_crls(&ids).await.unwrap().len(), 5);
    assert_eq!(store.get_authority(ids[0]).await.unwrap(), authorities[0]);
    // Deleted, with everything below it; the audit trail stays.
    let audited = audit_count(store).await;
    store
        .delete_cluster(a.cluster.id, Some(stored.version), &audit("delete", Some(a.cluster.id)))
        .await
        .unwrap();
    assert!(matches!(store.find_cluster("alpha").await, Err(StoreError::NotFound)));
    assert!(store.list_authorities(a.cluster.id).await.unwrap().is_empty());
    assert!(store.current_crls(&ids).await.unwrap().is_empty());
    assert_eq!(audit_count(store).await, audited + 1);
    assert!(matches!(
        store.delete_cluster(a.cluster.id, None, &audit("delete", None)).await,
        Err(StoreError::NotFound)
    ));
}

async fn authorities_rotate_and_retire(backend: Backend) {
    let f = open(backend).await;
    let store = f.store.as_ref();
    let new = new_cluster("rot");
    store.create_cluster(&new, &audit("create", None)).await.unwrap();
    let (master, _) = MasterKey::generate().unwrap();
    let keyring = kca::keyring::Keyring::new(master);
    let gen2 = kca::clusters::build_authority(
        &new.cluster,
        AuthorityKind::Operators,
        2,
        kca::pki::KeyStorage::Sealed,
        &keyring,
        now(),
        Duration::from_secs(86_400),
    )
    .unwrap();
    store.rotate_authority(&gen2.record, &gen2.crl, &audit("rotate", None)).await.unwrap();
    // The same generation again conflicts.
    let again = kca::clusters::build_authority(
        &new.cluster,
        AuthorityKind::Operators,
        2,
        kca::pki::KeyStorage::Sealed,
        &keyring,
        now(),
        Duration::from_secs(86_400),
    )
    .unwrap();
    assert!(matches!(
        store.rotate_authority(&again.record, &again.crl, &audit("rotate", None)).await,
        Err(StoreError::Conflict(_))
    ));
    let operators: Vec<_> = store
        .list_authorities(new.cluster.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.kind == AuthorityKind::Operators)
        .collect();
    assert_eq!(
        operators.iter().map(|a| (a.generation, a.state)).collect::<Vec<_>>(),
        [(1, AuthorityState::Retiring), (2, AuthorityState::Active)]
    );
    let live = store.list_live_authorities().await.unwrap();
    assert_eq!(live.iter().filter(|a| a.cluster_id == new.cluster.id).count(), 6);
    // Retiring a generation that still vouches for a live certificate needs force, which revokes it.
    let gen1 = &operators[0];
    let live_cert = certificate(&new, AuthorityKind::Operators, "alice", now() + time::Duration::hours(1));
    let expired = certificate(&new, AuthorityKind::Operators, "old", now() - time::Duration::hours(1));
    store
        .record_certificates(&[(live_cert.clone(), audit("issue", None)), (expired, audit("issue", None))])
        .await
        .unwrap();
    let before = audit_count(store).await;
    assert!(matches!(
        store.retire_authority(gen1.id, false, &audit("retire", None)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(audit_count(store).await, before);
    let revoked = store.retire_authority(gen1.id, true, &audit("retire", None)).await.unwrap();
    assert_eq!(revoked, std::slice::from_ref(&live_cert.serial));
    let record = store.get_certificate(new.cluster.id, &live_cert.serial).await.unwrap();
    assert_eq!(record.revocation_reason, Some(RevocationReason::CessationOfOperation));
    assert_eq!(store.get_authority(gen1.id).await.unwrap().state, AuthorityState::Retired);
    assert!(store.current_crls(&[gen1.id]).await.unwrap().is_empty(), "a retired generation has no CRL");
}

async fn certificates_are_recorded_listed_and_revoked(backend: Backend) {
    let f = open(backend).await;
    let store = f.store.as_ref();
    let new = new_cluster("certs");
    store.create_cluster(&new, &audit("create", None)).await.unwrap();
    let hour = time::Duration::hours(1);
    let alice1 = certificate(&new, AuthorityKind::Operators, "alice", now() + hour);
    let alice2 = certificate(&new, AuthorityKind::Operators, "alice", now() + hour);
    let bob = certificate(&new, AuthorityKind::Operators, "bob", now() + hour);
    let old = certificate(&new, AuthorityKind::Operators, "alice", now() - hour);
    let batch: Vec<_> = [&alice1, &alice2, &bob, &old]
        .iter()
        .map(|c| ((*c).clone(), audit("issue", Some(new.cluster.id))))
        .collect();
    store.record_certificates(&batch).await.unwrap();
    // A serial is unique: a batch repeating one fails whole.
    let repeat = vec![
        (certificate(&new, AuthorityKind::Operators, "x", now() + hour), audit("issue", None)),
        (bob.clone(), audit("issue", None)),
    ];
    assert!(store.record_certificates(&repeat).await.is_err());
    assert!(matches!(
        store.get_certificate(new.cluster.id, &repeat[0].0.serial).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.get_certificate(new.cluster.id, &bob.serial).await.unwrap(), bob);
    assert!(matches!(store.get_certificate(Uuid::new_v4(), &bob.serial).await, Err(StoreError::NotFound)));
    let list =
        |user: Option<&str>, status: Option<CertificateStatus>, before_seq: Option<i64>, limit: u32| {
            let filter = CertificateFilter {
                common_name: user.map(String::from),
                status,
                before_seq,
                limit,
                expiring_before: None,
            };
            async move { store.list_certificates(new.cluster.id, &filter, now()).await.unwrap() }
        };
    let serials =
        |page: Vec<(i64, CertificateRecord)>| page.into_iter().map(|(_, c)| c.serial).collect::<Vec<_>>();
    assert_eq!(
        serials(list(None, None, None, 10).await),
        [old.serial.clone(), bob.serial.clone(), alice2.serial.clone(), alice1.serial.clone()]
    );
    assert_eq!(
        serials(list(Some("alice"), Some(CertificateStatus::Active), None, 10).await),
        [alice2.serial.clone(), alice1.serial.clone()]
    );
    assert_eq!(
        serials(list(None, Some(CertificateStatus::Expired), None, 10).await),
        std::slice::from_ref(&old.serial)
    );
    let first = list(None, None, None, 2).await;
    assert_eq!(
        serials(list(None, None, Some(first[1].0), 10).await),
        [alice2.serial.clone(), alice1.serial.clone()]
    );
    // Revoking one: once, then again changes nothing.
    let (record, now_revoked) = store
        .revoke_certificate(
            new.cluster.id,
            &bob.serial,
            RevocationReason::KeyCompromise,
            &audit("revoke", None),
        )
        .await
        .unwrap();
    assert!(now_revoked && record.revoked_at.is_some());
    let audited = audit_count(store).await;
    let (again, now_revoked) = store
        .revoke_certificate(new.cluster.id, &bob.serial, RevocationReason::Superseded, &audit("revoke", None))
        .await
        .unwrap();
    assert!(!now_revoked);
    assert_eq!(again.revocation_reason, Some(RevocationReason::KeyCompromise));
    assert_eq!(audit_count(store).await, audited, "revoking again writes no audit event");
    assert!(matches!(
        store
            .revoke_certificate(new.cluster.id, "00FF", RevocationReason::Unspecified, &audit("revoke", None))
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        serials(list(None, Some(CertificateStatus::Revoked), None, 10).await),
        std::slice::from_ref(&bob.serial)
    );
    // Revoking a user: the live ones only.
    let revoked = store
        .revoke_by_common_name(
            new.cluster.id,
            "alice",
            RevocationReason::Unspecified,
            &audit("revoke_user", None),
        )
        .await
        .unwrap();
    let mut got: Vec<_> = revoked.into_iter().map(|c| c.serial).collect();
    got.sort();
    let mut want = vec![alice1.serial.clone(), alice2.serial.clone()];
    want.sort();
    assert_eq!(got, want);
    let operators: Vec<Uuid> =
        new.authorities.iter().filter(|a| a.kind == AuthorityKind::Operators).map(|a| a.id).collect();
    let mut revoked_serials: Vec<_> =
        store.list_revoked_serials(&operators, now()).await.unwrap().into_iter().map(|(s, _)| s).collect();
    revoked_serials.sort();
    let mut want = vec![alice1.serial, alice2.serial, bob.serial];
    want.sort();
    assert_eq!(revoked_serials, want);
}

async fn crl_numbers_strictly_increase_and_list_what_is_revoked(backend: Backend) {
    let f = open(backend).await;
    let store = f.store.as_ref();
    let new = new_cluster("crl");
    store.create_cluster(&new, &audit("create", None)).await.unwrap();
    let operators = new.authorities.iter().find(|a| a.kind == AuthorityKind::Operators).unwrap();
    let cert = certificate(&new, AuthorityKind::Operators, "alice", now() + time::Duration::hours(1));
    store.record_certificates(&[(cert.clone(), audit("issue", None))]).await.unwrap();
    store
        .revoke_certificate(
            new.cluster.id,
            &cert.serial,
            RevocationReason::KeyCompromise,
            &audit("revoke", None),
        )
        .await
        .unwrap();
    let seen = std::sync::Mutex::new(Vec::new());
    let signer = fake_signer(&seen);
    let cutoff = now() - time::Duration::days(1);
    // The number is the stored one plus one, or the floor given when that is higher.
    let floor = kca::pki::crl::crl_number_floor(now()) + 1_000_000;
    let first =
        store.publish_crl(operators.id, cutoff, floor, &mut RevokedSet::default(), &signer).await.unwrap();
    let second =
        store.publish_crl(operators.id, cutoff, floor, &mut RevokedSet::default(), &signer).await.unwrap();
    assert_eq!((first.number, second.number), (floor, floor + 1));
    let third = store
        .publish_crl(operators.id, cutoff, floor + 10, &mut RevokedSet::default(), &signer)
        .await
        .unwrap();
    assert_eq!(third.number, floor + 10);
    let second =
        store.publish_crl(operators.id, cutoff, 1, &mut RevokedSet::default(), &signer).await.unwrap();
    assert_eq!(second.number, floor + 11);
    assert_eq!(second.entries, 1);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].1[0].serial.to_hex(), cert.serial);
    assert_eq!(seen[0].1[0].reason, RevocationReason::KeyCompromise);
    let current = store.current_crls(&[operators.id]).await.unwrap();
    assert_eq!(current[0].number, second.number);
    assert_eq!(current[0].der, format!("crl {}", second.number).into_bytes());
    assert!(matches!(
        store.publish_crl(Uuid::new_v4(), cutoff, 1, &mut RevokedSet::default(), &signer).await,
        Err(StoreError::NotFound)
    ));
}

/// A publication given the revoked set its previous one listed reads only the revocations made
/// since (by serial, by user), and lists exactly what a publication reading everything lists,
/// expiries included (carol's certificate, never revoked, is in neither).
async fn a_kept_revoked_set_reads_only_new_revocations_and_lists_what_a_full_read_does(backend: Backend) {
    let f = open(backend).await;
    let store = f.store.as_ref();
    let new = new_cluster("kept");
    store.create_cluster(&new, &audit("create", None)).await.unwrap();
    let operators = new.authorities.iter().find(|a| a.kind == AuthorityKind::Operators).unwrap();
    let hour = now() + time::Duration::hours(1);
    let soon = now() + time::Duration::minutes(10);
    let alice = certificate(&new, AuthorityKind::Operators, "alice", hour);
    let bob_long = certificate(&new, AuthorityKind::Operators, "bob", hour);
    let bob_short = certificate(&new, AuthorityKind::Operators, "bob", soon);
    let bob_etcd = certificate(&new, AuthorityKind::Etcd, "bob", hour);
    let carol = certificate(&new, AuthorityKind::Operators, "carol", hour);
    let batch: Vec<_> = [&alice, &bob_long, &bob_short, &bob_etcd, &carol]
        .into_iter()
        .map(|c| (c.clone(), audit("issue", None)))
        .collect();
    store.record_certificates(&batch).await.unwrap();

    let seen = std::sync::Mutex::new(Vec::new());
    let signer = fake_signer(&seen);
    let cutoff = now() - time::Duration::days(1);
    let mut kept = RevokedSet::default();
    // Publishes with the kept set, then with a fresh one (a whole read), and compares the two.
    let publish = async |kept: &mut RevokedSet, cutoff: OffsetDateTime| {
        store.publish_crl(operators.id, cutoff, 1, kept, &signer).await.unwrap();
        let mut listed: Vec<String> = kept.entries().iter().map(|e| e.serial.to_hex()).collect();
        store.publish_crl(operators.id, cutoff, 1, &mut RevokedSet::default(), &signer).await.unwrap();
        let mut whole: Vec<String> =
            seen.lock().unwrap().last().unwrap().1.iter().map(|e| e.serial.to_hex()).collect();
        listed.sort();
        whole.sort();
        assert_eq!(listed, whole, "the kept set lists what a whole read does");
        listed
    };
    assert!(publish(&mut kept, cutoff).await.is_empty());
    // Another replica's set, kept since the start while this one published three times.
    let mut other = RevokedSet::default();
    store.publish_crl(operators.id, cutoff, 1, &mut other, &signer).await.unwrap();

    store
        .revoke_certificate(
            new.cluster.id,
            &alice.serial,
            RevocationReason::KeyCompromise,
            &audit("revoke", None),
        )
        .await
        .unwrap();
    assert_eq!(publish(&mut kept, cutoff).await, std::slice::from_ref(&alice.serial));
    assert_eq!(kept.entries()[0].reason, RevocationReason::KeyCompromise);

    // Revoking a user numbers the revocations of each of the cluster's authorities: the etcd
    // certificate is not the operators CA's to list.
    let revoked = store
        .revoke_by_common_name(
            new.cluster.id,
            "bob",
            RevocationReason::Superseded,
            &audit("revoke_user", None),
        )
        .await
        .unwrap();
    assert_eq!(revoked.len(), 3);
    let mut want = vec![alice.serial.clone(), bob_long.serial.clone(), bob_short.serial.clone()];
    want.sort();
    assert_eq!(publish(&mut kept, cutoff).await, want);

    // A certificate that expired before the cutoff leaves the list.
    let later = soon + time::Duration::seconds(1);
    let mut want = vec![alice.serial.clone(), bob_long.serial.clone()];
    want.sort();
    assert_eq!(publish(&mut kept, later).await, want);
    assert_eq!(publish(&mut other, later).await, want, "the other replica reads what it missed");
}

async fn the_audit_trail_filters_by_cluster_and_pages(backend: Backend) {
    let f = open(backend).await;
    let store = f.store.as_ref();
    let (a, b) = (new_cluster("a"), new_cluster("b"));
    store.create_cluster(&a, &audit("create-a", Some(a.cluster.id))).await.unwrap();
    store.create_cluster(&b, &audit("create-b", Some(b.cluster.id))).await.unwrap();
    store.update_cluster(&a.cluster, &audit("update-a", Some(a.cluster.id))).await.unwrap();
    let all = store.list_audit(None, None, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.entry.action.as_str()).collect::<Vec<_>>(),
        ["update-a", "create-b", "create-a"]
    );
    assert_eq!(all[0].entry, audit("update-a", Some(a.cluster.id)).with_at(all[0].entry.at));
    let only_a = store.list_audit(None, Some(&[a.cluster.id]), 10).await.unwrap();
    assert_eq!(only_a.iter().map(|r| r.entry.action.as_str()).collect::<Vec<_>>(), ["update-a", "create-a"]);
    let page = store.list_audit(Some(all[0].id), None, 1).await.unwrap();
    assert_eq!(page[0].entry.action, "create-b");
    assert!(store.list_audit(None, Some(&[]), 10).await.unwrap().is_empty());
}

trait WithAt {
    fn with_at(self, at: OffsetDateTime) -> Self;
}

impl WithAt for AuditEntry {
    fn with_at(mut self, at: OffsetDateTime) -> Self {
        self.at = at;
        self
    }
}

async fn tokens_and_their_keys(backend: Backend) {
    let f = open(backend).await;
    let store = f.store.as_ref();
    assert!(store.list_token_keys().await.unwrap().is_empty());
    store.insert_token_key(1, b"sealed-1", 1, now(), None).await.unwrap();
    assert!(matches!(
        store.insert_token_key(1, b"again", 1, now(), None).await,
        Err(StoreError::Conflict(_))
    ));
    store.insert_token_key(2, b"sealed-2", 1, now(), Some(&audit("token_key.rotate", None))).await.unwrap();
    let token = |key_id: i32, expires_at: OffsetDateTime| TokenRecord {
        id: Uuid::new_v4(),
        subject: "ci".into(),
        scopes: vec![Scope::Read, Scope::KubeconfigsIssue],
        clusters: vec![Uuid::new_v4().to_string()],
        groups: Some(vec!["team-*".into()]),
        max_ttl: Some(600),
        key_id,
        created_by: "conformance".into(),
        created_at: now(),
        expires_at,
        last_used_at: None,
        revoked_at: None,
    };
    let live = token(1, now() + time::Duration::hours(1));
    let expired = token(2, now() - time::Duration::hours(1));
    store.insert_token(&live, &audit("token.create", None)).await.unwrap();
    store.insert_token(&expired, &audit("token.create", None)).await.unwrap();
    assert_eq!(store.get_token(live.id).await.unwrap(), live);
    assert!(matches!(store.get_token(Uuid::new_v4()).await, Err(StoreError::NotFound)));
    // Keys know until when their tokens live.
    let keys = store.list_token_keys().await.unwrap();
    assert_eq!(
        keys.iter().map(|k| (k.id, k.sealed_key.clone())).collect::<Vec<_>>(),
        [(1, b"sealed-1".to_vec()), (2, b"sealed-2".to_vec())]
    );
    assert_eq!(keys[0].last_token_expiry, Some(live.expires_at));
    assert_eq!(keys[1].last_token_expiry, Some(expired.expires_at));
    // Uses move forward only.
    let used = now();
    store.touch_tokens(&[(live.id, used)]).await.unwrap();
    store.touch_tokens(&[(live.id, used - time::Duration::minutes(1))]).await.unwrap();
    assert_eq!(store.get_token(live.id).await.unwrap().last_used_at, Some(used));
    // Listed newest first, paged.
    let page = store.list_tokens(None, 10).await.unwrap();
    assert_eq!(page.iter().map(|(_, t)| t.id).collect::<Vec<_>>(), [expired.id, live.id]);
    assert_eq!(store.list_tokens(Some(page[0].0), 10).await.unwrap().len(), 1);
    // Revoked once; the unexpired revoked ones are listed.
    let revoked = store.revoke_token(live.id, used, &audit("token.revoke", None)).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(used));
    let audited = audit_count(store).await;
    store.revoke_token(live.id, now(), &audit("token.revoke", None)).await.unwrap();
    assert_eq!(audit_count(store).await, audited, "revoking again writes no audit event");
    store.revoke_token(expired.id, used, &audit("token.revoke", None)).await.unwrap();
    assert_eq!(store.list_revoked_tokens(now()).await.unwrap(), [live.id]);
    assert!(matches!(
        store.revoke_token(Uuid::new_v4(), now(), &audit("x", None)).await,
        Err(StoreError::NotFound)
    ));
}

async fn pending_intermediates_are_replaced_and_installed_once(backend: Backend) {
    let f = open(backend).await;
    let store = f.store.as_ref();
    let new = new_cluster("int");
    store.create_cluster(&new, &audit("create", None)).await.unwrap();
    let (master, _) = MasterKey::generate().unwrap();
    let kind = AuthorityKind::Operators;
    assert!(matches!(store.get_pending_authority(new.cluster.id, kind).await, Err(StoreError::NotFound)));
    let first = kca::clusters::build_pending_authority(&new.cluster, kind, 2, &master, now()).unwrap();
    store.save_pending_authority(&first, &audit("request", None)).await.unwrap();
    assert_eq!(store.get_pending_authority(new.cluster.id, kind).await.unwrap(), first);
    // A newer request replaces it.
    let second = kca::clusters::build_pending_authority(&new.cluster, kind, 2, &master, now()).unwrap();
    store.save_pending_authority(&second, &audit("request", None)).await.unwrap();
    assert_eq!(store.get_pending_authority(new.cluster.id, kind).await.unwrap(), second);

    // An authority carrying a request's id installs it; the replaced request conflicts.
    let as_generation = |id: uuid::Uuid| {
        let keyring = kca::keyring::Keyring::new(MasterKey::generate().unwrap().0);
        let mut built = kca::clusters::build_authority(
            &new.cluster,
            kind,
            2,
            kca::pki::KeyStorage::Sealed,
            &keyring,
            now(),
            Duration::from_secs(86_400),
        )
        .unwrap();
        built.record.id = id;
        built.record.chain_pem = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".into();
        built.crl.authority_id = id;
        built
    };
    let stale = as_generation(first.id);
    assert!(matches!(
        store.install_intermediate(&stale.record, &stale.crl, &audit("install", None)).await,
        Err(StoreError::Conflict(_))
    ));
    let current = as_generation(second.id);
    store.install_intermediate(&current.record, &current.crl, &audit("install", None)).await.unwrap();
    assert!(matches!(store.get_pending_authority(new.cluster.id, kind).await, Err(StoreError::NotFound)));
    let operators: Vec<_> = store
        .list_authorities(new.cluster.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.kind == kind)
        .collect();
    assert_eq!(
        operators.iter().map(|a| (a.generation, a.state)).collect::<Vec<_>>(),
        [(1, AuthorityState::Retiring), (2, AuthorityState::Active)]
    );
    assert_eq!(operators[1].id, second.id);
    assert_eq!(operators[1].chain_pem, current.record.chain_pem);
    // Deleting the cluster takes its requests along.
    let third = kca::clusters::build_pending_authority(&new.cluster, kind, 3, &master, now()).unwrap();
    store.save_pending_authority(&third, &audit("request", None)).await.unwrap();
    store.delete_cluster(new.cluster.id, None, &audit("delete", None)).await.unwrap();
    assert!(matches!(store.get_pending_authority(new.cluster.id, kind).await, Err(StoreError::NotFound)));
}

async fn service_account_keys_overlap_and_retire(backend: Backend) {
    let f = open(backend).await;
    let store = f.store.as_ref();
    let new = new_cluster("sa");
    store.create_cluster(&new, &audit("create", None)).await.unwrap();
    let key = |key_id: &str| kca::store::ServiceAccountKeyRecord {
        id: uuid::Uuid::new_v4(),
        cluster_id: new.cluster.id,
        key_id: key_id.into(),
        state: AuthorityState::Active,
        key_algorithm: kca::pki::KeyAlgorithm::P256,
        sealed_key: vec![1, 2, 3],
        key_version: 1,
        public_pem: format!("pem {key_id}\n"),
        created_at: now(),
        previous_seal: None,
    };
    let states = || async {
        store
            .list_service_account_keys(new.cluster.id)
            .await
            .unwrap()
            .into_iter()
            .map(|k| (k.key_id, k.state))
            .collect::<Vec<_>>()
    };
    let first = key("a");
    store.add_service_account_key(&first, &audit("sa", None)).await.unwrap();
    assert_eq!(store.list_service_account_keys(new.cluster.id).await.unwrap(), vec![first.clone()]);
    assert!(matches!(
        store.add_service_account_key(&key("a"), &audit("sa", None)).await,
        Err(StoreError::Conflict(_))
    ));
    store.add_service_account_key(&key("b"), &audit("sa", None)).await.unwrap();
    assert_eq!(
        states().await,
        [("a".into(), AuthorityState::Retiring), ("b".into(), AuthorityState::Active)]
    );
    assert!(matches!(
        store.retire_service_account_key(new.cluster.id, "b", &audit("sa", None)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.retire_service_account_key(new.cluster.id, "zz", &audit("sa", None)).await,
        Err(StoreError::NotFound)
    ));
    store.retire_service_account_key(new.cluster.id, "a", &audit("sa", None)).await.unwrap();
    assert_eq!(states().await, [("a".into(), AuthorityState::Retired), ("b".into(), AuthorityState::Active)]);
    let before = audit_count(store).await;
    store.record_audit(&audit("export", None)).await.unwrap();
    assert_eq!(audit_count(store).await, before + 1);

    // A master-key rewrap seals service-account keys (and pending intermediate keys) again too,
    // keeping the previous seal; dropping the previous seals then forgets it.
    let (master, _) = MasterKey::generate().unwrap();
    let pending =
        kca::clusters::build_pending_authority(&new.cluster, AuthorityKind::Etcd, 2, &master, now()).unwrap();
    store.save_pending_authority(&pending, &audit("request", None)).await.unwrap();
    let reseal = |owner: SealedOwner, sealed: &[u8]| -> Result<Option<Vec<u8>>, kca::pki::PkiError> {
        match owner {
            SealedOwner::ServiceAccountKey(_) | SealedOwner::PendingAuthority(_)
                if !sealed.starts_with(b"v2:") =>
            {
                Ok(Some([b"v2:".as_slice(), sealed].concat()))
            }
            _ => Ok(None),
        }
    };
    let counts = store.rewrap_sealed_keys(2, &reseal, &audit("keys.rewrap", None)).await.unwrap();
    assert_eq!(counts.cluster_keys, 3, "two service-account keys and one pending key");
    let rewrapped = store.list_service_account_keys(new.cluster.id).await.unwrap();
    assert!(rewrapped.iter().all(|k| k.sealed_key.starts_with(b"v2:") && k.key_version == 2));
    assert_eq!(rewrapped[1].previous_seal.as_ref().unwrap().sealed_key, vec![1, 2, 3]);
    let pending_now = store.get_pending_authority(new.cluster.id, AuthorityKind::Etcd).await.unwrap();
    assert_eq!(pending_now.previous_seal.unwrap().sealed_key, pending.sealed_key);
    let check = |_: SealedOwner, _: &[u8]| -> Result<(), kca::pki::PkiError> { Ok(()) };
    store.drop_previous_seals(&check, &audit("keys.drop-previous", None)).await.unwrap();
    assert!(
        store
            .list_service_account_keys(new.cluster.id)
            .await
            .unwrap()
            .iter()
            .all(|k| k.previous_seal.is_none())
    );
}

/// A rewrap seals every key again (here: prefixes it with the new version), keeps the value it
/// replaced as the previous seal, leaves alone what is sealed already, changes nothing when one
/// value does not open; dropping the previous seals checks every current one first.
async fn sealed_keys_are_rewrapped_and_previous_seals_dropped(backend: Backend) {
    let f = open(backend).await;
    let store = f.store.as_ref();
    let new = new_cluster("rewrapped");
    store.create_cluster(&new, &audit("cluster.create", Some(new.cluster.id))).await.unwrap();
    store.insert_token_key(1, b"t1", 1, now(), None).await.unwrap();
    store.insert_setting_if_absent(kca::store::MASTER_KEY_CHECK, b"check").await.unwrap();
    let reseal_to = |version: &'static str| {
        move |_: SealedOwner, sealed: &[u8]| -> Result<Option<Vec<u8>>, kca::pki::PkiError> {
            if sealed.starts_with(version.as_bytes()) {
                return Ok(None);
            }
            Ok(Some([version.as_bytes(), sealed].concat()))
        }
    };
    let audited = audit_count(store).await;
    let counts = store.rewrap_sealed_keys(2, &reseal_to("v2:"), &audit("keys.rewrap", None)).await.unwrap();
    assert_eq!(counts, RewrapCounts { authorities: 5, token_keys: 1, master_key_check: 1, cluster_keys: 0 });
    assert_eq!(audit_count(store).await, audited + 1);
    let rewrapped = store.list_authorities(new.cluster.id).await.unwrap();
    for authority in &rewrapped {
        let original = new.authorities.iter().find(|a| a.id == authority.id).unwrap();
        assert_eq!(authority.sealed_key, [b"v2:".as_slice(), &original.sealed_key].concat());
        assert_eq!(authority.key_version, 2);
        assert_eq!(
            authority.previous_seal,
            Some(PreviousSeal {
                key_version: Some(original.key_version),
                sealed_key: original.sealed_key.clone()
            })
        );
    }
    let keys = store.list_token_keys().await.unwrap();
    assert_eq!((keys[0].sealed_key.as_slice(), keys[0].key_version), (&b"v2:t1"[..], Some(2)));
    assert_eq!(
        keys[0].previous_seal,
        Some(PreviousSeal { key_version: Some(1), sealed_key: b"t1".to_vec() })
    );
    assert_eq!(store.get_setting(kca::store::MASTER_KEY_CHECK).await.unwrap().unwrap(), b"v2:check");
    assert_eq!(store.get_setting(kca::store::MASTER_KEY_CHECK_PREVIOUS).await.unwrap().unwrap(), b"check");

    // Again: nothing to do, and the previous seals stay those of the previous key. A key added
    // meanwhile under the previous key is sealed again.
    store.insert_token_key(2, b"t2", 1, now(), None).await.unwrap();
    let counts = store.rewrap_sealed_keys(2, &reseal_to("v2:"), &audit("keys.rewrap", None)).await.unwrap();
    assert_eq!(counts, RewrapCounts { authorities: 0, token_keys: 1, master_key_check: 0, cluster_keys: 0 });
    assert_eq!(store.list_authorities(new.cluster.id).await.unwrap(), rewrapped);

    // One value that does not open: an error naming it, and nothing changed.
    let broken = new.authorities[3].id;
    let failing = |owner: SealedOwner, sealed: &[u8]| -> Result<Option<Vec<u8>>, kca::pki::PkiError> {
        if owner == SealedOwner::Authority(broken) {
            return Err(kca::pki::PkiError::Unseal);
        }
        Ok(Some([b"v3:".as_slice(), sealed].concat()))
    };
    let err = store.rewrap_sealed_keys(3, &failing, &audit("keys.rewrap", None)).await.unwrap_err();
    assert!(matches!(&err, StoreError::Sealed { owner, .. } if owner.contains(&broken.to_string())), "{err}");
    assert_eq!(store.list_authorities(new.cluster.id).await.unwrap(), rewrapped);

    // Dropping the previous seals: refused while a current one does not open, then done.
    let audited = audit_count(store).await;
    let only_v2 = |_: SealedOwner, sealed: &[u8]| -> Result<(), kca::pki::PkiError> {
        sealed.starts_with(b"v2:").then_some(()).ok_or(kca::pki::PkiError::Unseal)
    };
    store.insert_token_key(3, b"t3", 1, now(), None).await.unwrap();
    assert!(matches!(
        store.drop_previous_seals(&only_v2, &audit("keys.drop_previous", None)).await,
        Err(StoreError::Sealed { .. })
    ));
    assert!(store.list_token_keys().await.unwrap()[0].previous_seal.is_some());
    store.rewrap_sealed_keys(2, &reseal_to("v2:"), &audit("keys.rewrap", None)).await.unwrap();
    let counts = store.drop_previous_seals(&only_v2, &audit("keys.drop_previous", None)).await.unwrap();
    assert_eq!(counts, RewrapCounts { authorities: 5, token_keys: 3, master_key_check: 1, cluster_keys: 0 });
    assert_eq!(audit_count(store).await, audited + 2);
    assert!(store.list_authorities(new.cluster.id).await.unwrap().iter().all(|a| a.previous_seal.is_none()));
    assert!(store.list_token_keys().await.unwrap().iter().all(|k| k.previous_seal.is_none()));
    assert_eq!(store.get_setting(kca::store::MASTER_KEY_CHECK_PREVIOUS).await.unwrap(), None);
}

/// What one store backs up restores into an empty store of either backend, record for record,
/// with identity columns kept and continued; a store with data refuses a restore.
async fn backup_rows_restore_into_an_empty_store_of_either_backend(backend: Backend) {
    let source = open(backend).await;
    let store = source.store.as_ref();
    let new = new_cluster("backed-up");
    store.create_cluster(&new, &audit("cluster.create", Some(new.cluster.id))).await.unwrap();
    let cert = certificate(&new, AuthorityKind::Operators, "alice", now() + time::Duration::hours(1));
    store.record_certificates(&[(cert.clone(), audit("certificate.issue", None))]).await.unwrap();
    store
        .revoke_certificate(
            new.cluster.id,
            &cert.serial,
            RevocationReason::KeyCompromise,
            &audit("revoke", None),
        )
        .await
        .unwrap();
    store.insert_token_key(1, b"t1", 1, now(), None).await.unwrap();
    store.insert_setting_if_absent("k", b"v").await.unwrap();
    let rows = store.backup_rows().await.unwrap();
    for target in [Backend::Sqlite, Backend::Postgres] {
        let restored = open(target).await;
        let into = restored.store.as_ref();
        assert_eq!(into.restore_rows(&rows).await.unwrap(), rows.len() as u64);
        assert_eq!(
            into.find_cluster("backed-up").await.unwrap(),
            store.find_cluster("backed-up").await.unwrap()
        );
        assert_eq!(
            into.list_authorities(new.cluster.id).await.unwrap(),
            store.list_authorities(new.cluster.id).await.unwrap()
        );
        let ids: Vec<Uuid> = new.authorities.iter().map(|a| a.id).collect();
        assert_eq!(into.current_crls(&ids).await.unwrap().len(), 5);
        let filter = CertificateFilter { limit: 10, ..Default::default() };
        assert_eq!(
            into.list_certificates(new.cluster.id, &filter, now()).await.unwrap(),
            store.list_certificates(new.cluster.id, &filter, now()).await.unwrap()
        );
        assert_eq!(
            into.list_audit(None, None, 100).await.unwrap(),
            store.list_audit(None, None, 100).await.unwrap()
        );
        assert_eq!(into.list_token_keys().await.unwrap(), store.list_token_keys().await.unwrap());
        assert_eq!(into.get_setting("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        // New rows number after the restored ones.
        let last_audit = into.list_audit(None, None, 1).await.unwrap()[0].id;
        into.record_certificates(&[(
            certificate(&new, AuthorityKind::Operators, "bob", now() + time::Duration::hours(1)),
            audit("certificate.issue", None),
        )])
        .await
        .unwrap();
        assert!(into.list_audit(None, None, 1).await.unwrap()[0].id > last_audit);
        let page = into.list_certificates(new.cluster.id, &filter, now()).await.unwrap();
        assert!(page[0].0 > page[1].0);
        assert!(matches!(into.restore_rows(&rows).await, Err(StoreError::Conflict(_))), "{target:?}");
    }
    // A backup taken before a column existed restores with the column's default: here, one
    // without the revocation numbering, whose revoked certificate still reaches the CRL.
    let mut older = rows.clone();
    for (_, values) in &mut older {
        values.remove("revocations");
        values.remove("revocation_seq");
    }
    let restored = open(backend).await;
    let into = restored.store.as_ref();
    assert_eq!(into.restore_rows(&older).await.unwrap(), rows.len() as u64);
    let operators = new.authorities.iter().find(|a| a.kind == AuthorityKind::Operators).unwrap();
    let seen = std::sync::Mutex::new(Vec::new());
    let signer = fake_signer(&seen);
    let crl = into
        .publish_crl(operators.id, now() - time::Duration::days(1), 1, &mut RevokedSet::default(), &signer)
        .await
        .unwrap();
    assert_eq!(crl.entries, 1);
}
