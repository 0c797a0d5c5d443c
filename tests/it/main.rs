//! Integration tests: one binary, since linking dominates build time.

mod common;

mod auth;
mod browser;
mod cli;
mod clusters;
mod components;
mod compose;
mod crl_sync;
mod faults;
mod fuzz_regressions;
mod haproxy;
mod keys;
mod kubeconfigs;
mod limits;
mod lint;
mod mtls;
mod openapi;
mod operations;
mod pgcluster;
mod pki_export;
mod postgres_tcp;
mod replicas;
mod revocation;
mod rotation;
mod schemathesis;
mod tls;
