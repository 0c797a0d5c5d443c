//! Integration tests: one binary, since linking dominates build time.

mod common;

mod auth;
mod browser;
mod cli;
mod clusters;
mod components;
mod compose;
mod concurrency;
mod crl_sync;
mod curl;
mod faults;
mod fuzz_regressions;
mod haproxy;
mod hardening;
mod keys;
mod kubeconfigs;
mod limits;
mod lint;
mod mtls;
mod openapi;
mod operations;
mod pgcluster;
mod pki_export;
mod pki_import;
mod postgres_tcp;
mod privileged;
mod replicas;
mod resilience;
mod revocation;
mod rotation;
mod routes;
mod schemathesis;
mod store_conformance;
mod tls;
mod tokens;
