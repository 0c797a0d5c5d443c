//! Integration tests: one binary, since linking dominates build time.

mod common;

mod auth;
mod cli;
mod clusters;
mod components;
mod keys;
mod kubeconfigs;
mod limits;
mod lint;
mod mtls;
mod openapi;
mod pgcluster;
mod revocation;
mod rotation;
