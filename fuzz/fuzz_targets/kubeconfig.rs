//! The kubeconfig renderer with arbitrary strings: the YAML must always come out, and parse back
//! to exactly the strings that went in (no injected keys, no string read back as a number, a bool
//! or null, nothing lost in escaping).

#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kca::pki::kubeconfig::{ClusterEndpoint, UserCredential, render};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_norway::Value;

#[derive(Arbitrary, Debug)]
struct Input {
    cluster: String,
    server: String,
    ca_bundle_pem: String,
    user: String,
    credential: Credential,
}

#[derive(Arbitrary, Debug)]
enum Credential {
    Certificate { certificate_pem: String, key_pem: Option<String> },
    Exec { command: String, args: Vec<String>, install_hint: String },
}

fuzz_target!(|input: Input| {
    let cluster =
        ClusterEndpoint { name: &input.cluster, server: &input.server, ca_bundle_pem: &input.ca_bundle_pem };
    let credential = match &input.credential {
        Credential::Certificate { certificate_pem, key_pem } => {
            UserCredential::Certificate { certificate_pem, key_pem: key_pem.as_deref() }
        }
        Credential::Exec { command, args, install_hint } => {
            UserCredential::Exec { command, args: args.clone(), install_hint }
        }
    };
    let yaml = render(&cluster, &input.user, &credential);
    let parsed: Value = serde_norway::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));

    let text = |value: &Value| value.as_str().map(str::to_string);
    let context = format!("{}@{}", input.user, input.cluster);
    let expect = |value: &Value, wanted: &str, what: &str| {
        assert_eq!(text(value).as_deref(), Some(wanted), "{what} in\n{yaml}");
    };
    expect(&parsed["apiVersion"], "v1", "apiVersion");
    expect(&parsed["kind"], "Config", "kind");
    expect(&parsed["current-context"], &context, "current-context");
    expect(&parsed["clusters"][0]["name"], &input.cluster, "cluster name");
    expect(&parsed["clusters"][0]["cluster"]["server"], &input.server, "server");
    expect(
        &parsed["clusters"][0]["cluster"]["certificate-authority-data"],
        &STANDARD.encode(&input.ca_bundle_pem),
        "CA data",
    );
    expect(&parsed["users"][0]["name"], &input.user, "user name");
    expect(&parsed["contexts"][0]["name"], &context, "context name");
    expect(&parsed["contexts"][0]["context"]["cluster"], &input.cluster, "context cluster");
    expect(&parsed["contexts"][0]["context"]["user"], &input.user, "context user");
    for key in ["clusters", "users", "contexts"] {
        assert_eq!(parsed[key].as_sequence().map(Vec::len), Some(1), "{key} in\n{yaml}");
    }
    let user = &parsed["users"][0]["user"];
    match &input.credential {
        Credential::Certificate { certificate_pem, key_pem } => {
            expect(&user["client-certificate-data"], &STANDARD.encode(certificate_pem), "certificate");
            match key_pem {
                Some(key) => expect(&user["client-key-data"], &STANDARD.encode(key), "key"),
                None => assert!(user.get("client-key-data").is_none(), "{yaml}"),
            }
            assert_eq!(user.as_mapping().map(|m| m.len()), Some(1 + usize::from(key_pem.is_some())));
        }
        Credential::Exec { command, args, install_hint } => {
            let exec = &user["exec"];
            expect(&exec["command"], command, "command");
            expect(&exec["installHint"], install_hint, "installHint");
            expect(&exec["interactiveMode"], "Never", "interactiveMode");
            // No arguments come out as `args:` (null), which kubectl reads as none.
            let parsed_args: Option<Vec<String>> = match &exec["args"] {
                Value::Null => Some(vec![]),
                other => other.as_sequence().map(|s| s.iter().filter_map(text).collect()),
            };
            assert_eq!(parsed_args.as_ref(), Some(args), "args in\n{yaml}");
        }
    }
});
