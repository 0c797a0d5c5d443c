//! CA rotation with overlapping bundles, and retirement.

use reqwest::Method;
use serde_json::json;

use crate::common::*;
use crate::kubeconfigs::webpki_verify;
use crate::lint::pkilint;
use crate::on_both_backends;
use crate::revocation::{crl_facts, issue_user};
use kca::token::Scope;

on_both_backends!(rotation_overlaps_then_retirement_cuts_off);

async fn rotation_overlaps_then_retirement_cuts_off(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.token(&[Scope::Admin]).await;
    server.create_cluster(&admin, "prod").await;
    let scratch = tempfile::tempdir().unwrap();
    let old = issue_user(&server, &admin, "prod", "alice", &["dev"]).await;

    // Only an admin rotates; generation 2 becomes the signer, generation 1 is retiring.
    let writer = server.token(&[Scope::ClustersWrite, Scope::CertificatesRevoke]).await;
    server
        .json(Method::POST, "/v1/clusters/prod/authorities/operators/rotate", Some(&writer), None, 403)
        .await;
    let rotated = server
        .json(Method::POST, "/v1/clusters/prod/authorities/operators/rotate", Some(&admin), None, 200)
        .await;
    assert_eq!(rotated["generation"], 2);
    let states: Vec<(i64, &str)> = rotated["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["generation"].as_i64().unwrap(), g["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [(1, "retiring"), (2, "active")], "soonest-expiring first");
    let old_subject = rotated["generations"][0]["subject"].as_str().unwrap();
    assert_ne!(rotated["subject"].as_str().unwrap(), old_subject, "a distinct DN per generation");
    assert_ne!(rotated["generations"][0]["fingerprint_sha256"], rotated["fingerprint_sha256"]);
    let new = issue_user(&server, &admin, "prod", "bob", &["dev"]).await;

    // During the overlap both certificates verify against ca.pem and client-ca.pem.
    let (_, _, bundle) =
        server.send(Method::GET, "/v1/clusters/prod/authorities/operators/ca.pem", None, None).await;
    assert_eq!(pem::parse_many(&bundle).unwrap().len(), 2);
    let (_, _, client_ca) = server.send(Method::GET, "/v1/clusters/prod/client-ca.pem", None, None).await;
    assert_eq!(pem::parse_many(&client_ca).unwrap().len(), 4);
    for cert in [&old, &new] {
        webpki_verify(cert["certificate_pem"].as_str().unwrap(), &bundle, true).unwrap();
        webpki_verify(cert["certificate_pem"].as_str().unwrap(), &client_ca, true).unwrap();
    }
    // Each generation has its own CRL; both verify with openssl and pass pkilint.
    let (_, _, crls) =
        server.send(Method::GET, "/v1/clusters/prod/authorities/operators/crl.pem", None, None).await;
    let crls = pem::parse_many(&crls).unwrap();
    let cas = pem::parse_many(&bundle).unwrap();
    assert_eq!(crls.len(), 2);
    for (ca, crl) in cas.iter().zip(&crls) {
        let ca_file =
            temp_file(scratch.path(), "ca.pem", kca::pki::to_pem("CERTIFICATE", ca.contents()).as_bytes());
        let crl_pem = kca::pki::to_pem("X509 CRL", crl.contents());
        let crl_file = temp_file(scratch.path(), "crl.pem", crl_pem.as_bytes());
        let verified = std::process::Command::new("openssl")
            .args([
                "crl",
                "-in",
                crl_file.to_str().unwrap(),
                "-CAfile",
                ca_file.to_str().unwrap(),
                "-noout",
                "-verify",
            ])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&verified.stderr).contains("verify OK"));
        assert_eq!(pkilint("lint_crl", &["-t", "CRL", "-p", "PKIX"], &crl_pem, scratch.path()), "");
    }
    // Revoking the old certificate lands in generation 1's CRL, not generation 2's.
    let path = format!("/v1/clusters/prod/certificates/{}/revoke", old["serial"].as_str().unwrap());
    server.json(Method::POST, &path, Some(&admin), None, 200).await;
    let (_, _, crls) =
        server.send(Method::GET, "/v1/clusters/prod/authorities/operators/crl.pem", None, None).await;
    let crls = pem::parse_many(&crls).unwrap();
    assert_eq!(crl_facts(crls[0].contents()).1, [old["serial"].as_str().unwrap()]);
    assert!(crl_facts(crls[1].contents()).1.is_empty());

    // Retiring: not the signer; not while generation 1 still vouches for a live certificate.
    server
        .json(
            Method::POST,
            "/v1/clusters/prod/authorities/operators/generations/2/retire",
            Some(&admin),
            None,
            409,
        )
        .await;
    let rotated_again = server
        .json(Method::POST, "/v1/clusters/prod/authorities/operators/rotate", Some(&admin), None, 200)
        .await;
    assert_eq!(rotated_again["generation"], 3);
    let refused = server
        .json(
            Method::POST,
            "/v1/clusters/prod/authorities/operators/generations/2/retire",
            Some(&admin),
            None,
            409,
        )
        .await;
    assert!(refused["detail"].as_str().unwrap().contains("1 unexpired, unrevoked"), "{refused}");
    // Generation 1 has only a revoked certificate left: it retires without force.
    let after = server
        .json(
            Method::POST,
            "/v1/clusters/prod/authorities/operators/generations/1/retire",
            Some(&admin),
            None,
            200,
        )
        .await;
    let generations: Vec<i64> =
        after["generations"].as_array().unwrap().iter().map(|g| g["generation"].as_i64().unwrap()).collect();
    assert_eq!(generations, [2, 3]);
    // Force revokes bob (cessationOfOperation), then retires generation 2.
    server
        .json(
            Method::POST,
            "/v1/clusters/prod/authorities/operators/generations/2/retire",
            Some(&admin),
            Some(json!({"force": true})),
            200,
        )
        .await;
    let bob = server
        .json(
            Method::GET,
            &format!("/v1/clusters/prod/certificates/{}", new["serial"].as_str().unwrap()),
            Some(&admin),
            None,
            200,
        )
        .await;
    assert_eq!(bob["status"], "revoked");
    assert_eq!(bob["revocation_reason"], "cessationOfOperation");

    // Generations 1 and 2 are gone from every bundle; their certificates fail; 3 signs.
    let (_, _, bundle) =
        server.send(Method::GET, "/v1/clusters/prod/authorities/operators/ca.pem", None, None).await;
    let (_, _, client_ca) = server.send(Method::GET, "/v1/clusters/prod/client-ca.pem", None, None).await;
    let (_, _, client_crl) = server.send(Method::GET, "/v1/clusters/prod/client-crl.pem", None, None).await;
    assert_eq!(pem::parse_many(&bundle).unwrap().len(), 1);
    assert_eq!(pem::parse_many(&client_ca).unwrap().len(), 3);
    assert_eq!(pem::parse_many(&client_crl).unwrap().len(), 3);
    for cert in [&old, &new] {
        assert!(webpki_verify(cert["certificate_pem"].as_str().unwrap(), &bundle, true).is_err());
        assert!(webpki_verify(cert["certificate_pem"].as_str().unwrap(), &client_ca, true).is_err());
    }
    let fresh = issue_user(&server, &admin, "prod", "carol", &[]).await;
    webpki_verify(fresh["certificate_pem"].as_str().unwrap(), &bundle, true).unwrap();
    server
        .json(Method::GET, "/v1/clusters/prod/authorities/operators/crl?generation=1", None, None, 404)
        .await;
    // Retiring again answers the current state.
    server
        .json(
            Method::POST,
            "/v1/clusters/prod/authorities/operators/generations/1/retire",
            Some(&admin),
            None,
            200,
        )
        .await;
    server
        .json(
            Method::POST,
            "/v1/clusters/prod/authorities/operators/generations/9/retire",
            Some(&admin),
            None,
            404,
        )
        .await;

    // Kubeconfigs carry every live control-plane generation, the soonest-expiring first.
    server
        .json(Method::POST, "/v1/clusters/prod/authorities/control-plane/rotate", Some(&admin), None, 200)
        .await;
    let control_plane =
        server.json(Method::GET, "/v1/clusters/prod/authorities/control-plane", None, None, 200).await;
    let issued = issue_user(&server, &admin, "prod", "dave", &[]).await;
    let expected: String = control_plane["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["certificate_pem"].as_str().unwrap())
        .collect();
    assert_eq!(issued["ca_pem"].as_str().unwrap(), expected);
    assert_eq!(pem::parse_many(&expected).unwrap().len(), 2);
    // The operators rotation touched nothing else: etcd, kubelet and aggregation are at generation 1.
    let authorities = server.json(Method::GET, "/v1/clusters/prod/authorities", None, None, 200).await;
    for authority in authorities.as_array().unwrap() {
        let expected = match authority["kind"].as_str().unwrap() {
            "operators" => 3,
            "control-plane" => 2,
            _ => 1,
        };
        assert_eq!(authority["generation"], expected);
    }
    let audit = server.json(Method::GET, "/v1/audit?limit=500", Some(&admin), None, 200).await;
    let actions: Vec<&str> =
        audit["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "authority.rotate").count(), 3);
    assert_eq!(actions.iter().filter(|a| **a == "authority.retire").count(), 2);
}
