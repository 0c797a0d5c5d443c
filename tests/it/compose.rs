//! docker-compose.yml and the Dockerfile: there is no Docker engine here, so their structure is
//! checked: services, healthcheck, secret wiring, and variables kca actually reads.

use serde_norway::Value;

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{}/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn the_compose_file_wires_postgres_kca_and_their_secrets() {
    let compose: Value = serde_norway::from_str(&read("docker-compose.yml")).unwrap();
    let services = &compose["services"];
    let postgres = &services["postgres"];
    let kca = &services["kca"];

    // Postgres: a healthcheck that asks Postgres itself, data on a named volume.
    let check = postgres["healthcheck"]["test"].as_sequence().unwrap();
    assert!(check.iter().any(|part| part.as_str().is_some_and(|p| p.contains("pg_isready"))));
    assert!(postgres["healthcheck"]["interval"].is_string());
    let volume = postgres["volumes"][0].as_str().unwrap();
    let (name, mount) = volume.split_once(':').unwrap();
    assert_eq!(mount, "/var/lib/postgresql/data");
    assert!(compose["volumes"].as_mapping().unwrap().contains_key(name), "a named volume");
    assert_eq!(postgres["environment"]["POSTGRES_PASSWORD_FILE"], "/run/secrets/postgres_password");

    // kca: built from the Dockerfile, waits for a healthy database.
    assert_eq!(kca["build"], ".");
    assert_eq!(kca["depends_on"]["postgres"]["condition"], "service_healthy");
    // Every secret a service reads from /run/secrets is granted to it and declared from a file.
    let declared = compose["secrets"].as_mapping().unwrap();
    for service in [postgres, kca] {
        let granted: Vec<&str> =
            service["secrets"].as_sequence().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        for (variable, value) in service["environment"].as_mapping().unwrap() {
            let Some(path) = value.as_str().and_then(|v| v.strip_prefix("/run/secrets/")) else { continue };
            assert!(granted.contains(&path), "{variable:?} reads secret {path} the service is not granted");
            assert!(declared[path]["file"].is_string(), "secret {path} is declared from a file");
        }
    }
    let environment = kca["environment"].as_mapping().unwrap();
    assert_eq!(environment["KCA_MASTER_KEY_FILE"], "/run/secrets/kca_master_key");
    assert!(!environment.contains_key("KCA_MASTER_KEY"), "no key in the compose file itself");
    // kca knows every variable the compose file sets.
    let help =
        std::process::Command::new(env!("CARGO_BIN_EXE_kca")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for variable in environment.keys().map(|k| k.as_str().unwrap()) {
        assert!(help.contains(variable), "kca serve does not read {variable}");
    }
    assert!(kca["volumes"][0].as_str().unwrap().ends_with(":/var/lib/kca"));
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_small_as_non_root() {
    let dockerfile = read("Dockerfile");
    let stages: Vec<&str> = dockerfile.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "multi-stage: build, then runtime");
    assert!(stages[0].contains(" AS build"));
    assert!(stages[1].contains("-slim"), "a small runtime image");
    let runtime = dockerfile.split(stages[1]).nth(1).unwrap();
    assert!(runtime.contains("COPY --from=build") && runtime.contains("target/release/kca"));
    let user = runtime.lines().find(|l| l.starts_with("USER ")).expect("a USER in the runtime stage");
    assert_ne!(user.trim(), "USER root");
    assert!(dockerfile.contains("--locked"));
    // What the build stage copies exists.
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(source).exists(), "{source}");
        }
    }
}
