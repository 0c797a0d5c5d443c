//! Inputs the fuzz targets of `fuzz/` found crashing, fed through the same functions: each must now
//! answer an error, never panic. Add one test per crash fixed, with the input the target saved.

use kca::config::parse_duration;

/// `path_params`: `parse_duration` multiplied the number by the unit unchecked, which panicked with
/// overflow checks on and wrapped to a short duration in release builds.
#[test]
fn a_duration_too_long_for_the_clock_is_refused() {
    let found = b"4717777777777777777h";
    let text = std::str::from_utf8(found).unwrap();
    let err = parse_duration(text).unwrap_err();
    assert!(err.contains("too long"), "{err}");

    for text in ["5124095576030432h", "307445734561825861m", "213503982334602d", "18446744073709551616s"] {
        assert!(parse_duration(text).is_err(), "{text}");
    }
    // A century parses, to the exact number of seconds; a second more does not.
    let century = kca::config::MAX_DURATION_SECONDS;
    assert_eq!(parse_duration("36500d"), Ok(std::time::Duration::from_secs(century)));
    assert_eq!(parse_duration(&century.to_string()), Ok(std::time::Duration::from_secs(century)));
    assert!(parse_duration(&(century + 1).to_string()).is_err());
}

/// `kubeconfig` (input bytes `20 e2 80 a8 24 bf c3`: cluster name " \u{2028}$", user ""): the
/// renderer wrote U+2028 and U+2029 unescaped inside quoted scalars; YAML parsers (libyaml here,
/// go-yaml in kubectl) take them as line breaks and fold them, so the names read back differed.
#[test]
fn line_and_paragraph_separators_survive_the_kubeconfig() {
    use kca::pki::kubeconfig::{ClusterEndpoint, UserCredential, render};

    for (cluster_name, user) in
        [(" \u{2028}$", ""), ("prod", "alice\u{2029} x"), ("c", "a \u{2028}\u{2029} b")]
    {
        let cluster = ClusterEndpoint { name: cluster_name, server: "https://k:6443", ca_bundle_pem: "CA" };
        let args = vec![format!("--user={user}")];
        for credential in [
            UserCredential::Certificate { certificate_pem: "CERT", key_pem: None },
            UserCredential::Exec { command: "kca", args: args.clone(), install_hint: user },
        ] {
            let yaml = render(&cluster, user, &credential);
            let parsed: serde_norway::Value = serde_norway::from_str(&yaml).unwrap();
            let context = format!("{user}@{cluster_name}");
            assert_eq!(parsed["clusters"][0]["name"].as_str(), Some(cluster_name), "{yaml}");
            assert_eq!(parsed["users"][0]["name"].as_str(), Some(user), "{yaml}");
            assert_eq!(parsed["contexts"][0]["name"].as_str(), Some(context.as_str()), "{yaml}");
            assert_eq!(parsed["current-context"].as_str(), Some(context.as_str()), "{yaml}");
            if let UserCredential::Exec { .. } = credential {
                let exec = &parsed["users"][0]["user"]["exec"];
                assert_eq!(exec["args"][0].as_str(), Some(args[0].as_str()), "{yaml}");
                assert_eq!(exec["installHint"].as_str(), Some(user), "{yaml}");
            }
        }
    }
}
