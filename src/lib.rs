//! kca: a private certificate authority for Kubernetes clusters, served as an HTTP REST API.

pub mod app;
pub mod background;
pub mod backup;
pub mod cli;
pub mod clusters;
pub mod config;
pub mod crl_publisher;
pub mod devcert;
pub mod error;
pub mod http;
pub mod issuance;
pub mod keyring;
pub mod metrics;
pub mod names;
pub mod pki;
pub mod policy;
pub mod profiles;
pub mod published;
pub mod ratelimit;
pub mod recorder;
pub mod scope;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod token;
