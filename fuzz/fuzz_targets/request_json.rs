//! Request bodies of the API: each body type the handlers accept is deserialized from the same
//! bytes, and whatever parses goes through the pure checks that follow in its handler, then (for
//! issuing requests that pass them) through signing with a fixed CA. Malformed or hostile JSON
//! must be refused with an error, never a panic, and a request the checks accept must sign (a
//! failure there would be a 500 for a client's input).

#![no_main]

use std::collections::BTreeMap;

use kca::clusters::merge_patch;
use kca::clusters::{ClusterDraft, validate_labels, validate_server_url};
use kca::http::authorities::RetireRequest;
use kca::http::certificates::{RevokeRequest, RevokeUserRequest};
use kca::http::clusters::{ClusterPatch, NewClusterRequest};
use kca::http::components::NewCertificateRequest;
use kca::http::kubeconfigs::NewKubeconfigRequest;
use kca::issuance::{SubjectKey, Usage, UserRequest, decide_user_certificate, sign};
use kca::pki::PkiError;
use kca::policy::{IssuancePolicy, validate_identity};
use kca::profiles::{find, profiles, resolve};
use kca_fuzz::{NOW, callers, current_labels, fixed_ca, policies};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<NewClusterRequest>(data) {
        new_cluster(request);
    }
    if let Ok(patch) = serde_json::from_slice::<ClusterPatch>(data) {
        patch_cluster(patch);
    }
    if let Ok(request) = serde_json::from_slice::<NewKubeconfigRequest>(data) {
        kubeconfig(request);
    }
    if let Ok(request) = serde_json::from_slice::<NewCertificateRequest>(data) {
        component(request);
    }
    // Revoke and retire take an optional body: blank means the defaults.
    if !data.iter().all(u8::is_ascii_whitespace) {
        let _ = serde_json::from_slice::<RevokeRequest>(data).map(|r| r.reason.as_str());
        let _ = serde_json::from_slice::<RetireRequest>(data).map(|r| r.force);
    }
    if let Ok(request) = serde_json::from_slice::<RevokeUserRequest>(data) {
        let _ = validate_identity("user", &request.user);
        let _ = request.reason.as_str();
    }
});

/// `POST /v1/clusters`, up to the CA generation.
fn new_cluster(request: NewClusterRequest) {
    let mut draft = ClusterDraft::from(request);
    if draft.validate().is_ok() {
        // A policy that validated decides requests without trouble.
        decide_all(&draft.policy);
    }
}

/// `PATCH /v1/clusters/{cluster}`: `apply_patch` in src/http/clusters.rs (private), applied to a
/// cluster with the default policy.
fn patch_cluster(patch: ClusterPatch) {
    if let Some(server) = &patch.server {
        let _ = validate_server_url(server);
    }
    if let Some(policy_patch) = patch.policy {
        let mut policy = serde_json::to_value(IssuancePolicy::default()).expect("a policy serializes");
        merge_patch(&mut policy, policy_patch);
        if let Ok(policy) = serde_json::from_value::<IssuancePolicy>(policy)
            && policy.validate().is_ok()
        {
            decide_all(&policy);
        }
    }
    if let Some(labels_patch) = patch.labels {
        let mut labels = serde_json::to_value(current_labels()).expect("labels serialize");
        merge_patch(&mut labels, labels_patch);
        if let Ok(labels) = serde_json::from_value::<BTreeMap<String, String>>(labels) {
            let _ = validate_labels(&labels);
        }
    }
}

/// Decide a few fixed user requests under `policy`, for every caller.
fn decide_all(policy: &IssuancePolicy) {
    let groups = ["dev".to_string(), "system:masters".to_string()];
    for claims in callers() {
        for ttl_seconds in [None, Some(1), Some(policy.max_ttl_seconds)] {
            let request = UserRequest { user: "alice", groups: &groups[..1], ttl_seconds };
            let _ = decide_user_certificate(policy, claims, &request);
            let request = UserRequest { user: "alice", groups: &groups, ttl_seconds };
            let _ = decide_user_certificate(policy, claims, &request);
        }
    }
}

/// `POST /v1/clusters/{cluster}/kubeconfigs`: the decision for every fixed policy and caller,
/// then signing for the first that allows it, and the kubeconfig.
fn kubeconfig(request: NewKubeconfigRequest) {
    let user_request =
        UserRequest { user: &request.user, groups: &request.groups, ttl_seconds: request.ttl_seconds };
    let mut allowed = None;
    for policy in policies() {
        for claims in callers() {
            if let Ok(ttl) = decide_user_certificate(policy, claims, &user_request) {
                allowed.get_or_insert(ttl);
            }
        }
    }
    let Some(ttl) = allowed else { return };
    let Ok(key) = SubjectKey::from_request(request.csr_pem, request.key_algorithm) else { return };
    let usage = Usage::user(request.user, request.groups, ttl);
    if let Some(signed) = sign_checked(&key, &usage) {
        let ca_pem = fixed_ca().signer.certificate_pem();
        let cluster = kca::pki::kubeconfig::ClusterEndpoint {
            name: "prod",
            server: "https://k8s.example.com:6443",
            ca_bundle_pem: &ca_pem,
        };
        let credential = kca::pki::kubeconfig::UserCredential::Certificate {
            certificate_pem: &signed.leaf.pem,
            key_pem: signed.private_key_pem.as_ref().map(|k| k.as_str()),
        };
        kca::pki::kubeconfig::render(&cluster, &usage.common_name, &credential);
    }
}

/// `POST /v1/clusters/{cluster}/certificates`: the request against every profile (the handler
/// uses the named one), then signing under the named profile when it resolves.
fn component(request: NewCertificateRequest) {
    let component = request.component();
    for profile in profiles() {
        let _ = resolve(&profile, &component);
    }
    let Some(profile) = find(&request.profile) else { return };
    let Ok(usage) = resolve(&profile, &component) else { return };
    let Ok(key) = SubjectKey::from_request(request.csr_pem, request.key_algorithm) else { return };
    sign_checked(&key, &usage);
}

/// Sign as the handlers do; the only acceptable failure is a bad CSR (answered 422). Anything
/// else would be a 500 for a request the checks let through.
fn sign_checked(key: &SubjectKey, usage: &Usage) -> Option<kca::issuance::Signed> {
    match sign(&fixed_ca().signer, key, usage, NOW) {
        Ok(signed) => Some(signed),
        Err(PkiError::InvalidCsr(_)) => None,
        Err(other) => panic!("a request that passed the checks fails to sign: {other}"),
    }
}
