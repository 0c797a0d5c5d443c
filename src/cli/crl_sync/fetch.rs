//! GETting the documents from kca, conditionally: with the ETag of the copy last synced in
//! `If-None-Match`, a 304 answers that copy again.

use anyhow::Context;
use reqwest::header::{ETAG, IF_NONE_MATCH};
use reqwest::{Method, StatusCode};

use super::Document;
use super::state::Synced;
use crate::cli::client::Client;

/// A fetched (or unchanged) document.
#[derive(Debug)]
pub struct Fetched {
    pub etag: Option<String>,
    pub body: Vec<u8>,
}

/// Fetches one cluster's documents for a list of CA kinds.
pub struct Fetcher {
    client: Client,
    cluster: String,
    /// The `kinds` query parameter.
    kinds: String,
}

impl Fetcher {
    pub fn new(client: Client, cluster: String, kinds: String) -> Self {
        Self { client, cluster, kinds }
    }

    /// Server, cluster and kinds: what the documents come from.
    pub fn source(&self) -> String {
        format!("{} {} {}", self.client.base_url(), self.cluster, self.kinds)
    }

    /// GET one document, with `If-None-Match` when its last synced copy is known.
    pub async fn fetch(&self, document: Document, previous: Option<&Synced>) -> anyhow::Result<Fetched> {
        let segments = ["v1", "clusters", self.cluster.as_str(), document.endpoint()];
        let mut request =
            self.client.maybe_authorized(Method::GET, &segments).query(&[("kinds", self.kinds.as_str())]);
        if let Some(etag) = previous.and_then(|p| p.etag.as_deref()) {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let response =
            self.client.send(request).await.with_context(|| format!("fetching {}", document.endpoint()))?;
        let etag = response.headers().get(ETAG).and_then(|v| v.to_str().ok()).map(str::to_string);
        if response.status() == StatusCode::NOT_MODIFIED {
            let previous = previous.context("the server answered 304 to an unconditional request")?;
            return Ok(Fetched { etag: etag.or_else(|| previous.etag.clone()), body: previous.body.clone() });
        }
        let body =
            response.bytes().await.with_context(|| format!("reading {}", document.endpoint()))?.to_vec();
        Ok(Fetched { etag, body })
    }
}
