//! Cacheable downloads (PEM bundles, CRLs): `ETag`, `If-None-Match` → 304, and `Cache-Control`.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A strong ETag over the body's SHA-256.
pub fn etag_of(body: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
    format!("\"{}\"", hex::encode(&digest.as_ref()[..16]))
}

/// Whether `If-None-Match` names `etag` (or `*`).
pub fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).any(|value| {
        value.split(',').map(str::trim).any(|candidate| {
            candidate == "*" || candidate.trim_start_matches("W/") == etag.trim_start_matches("W/")
        })
    })
}

/// Extra headers of a download.
#[derive(Default)]
pub struct Caching {
    pub max_age: Option<u64>,
    pub last_modified: Option<String>,
}

/// Answer the body with its validators, or 304 when the client has it already (then the body is
/// never built: a large CRL bundle is not copied for a client that will not read it).
pub fn cacheable<B: Into<Body>>(
    request_headers: &HeaderMap,
    etag: &str,
    content_type: &'static str,
    caching: Caching,
    body: impl FnOnce() -> B,
) -> Response {
    let mut response = if not_modified(request_headers, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = Response::new(body().into());
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    let cache_control = match caching.max_age {
        Some(seconds) => format!("public, max-age={seconds}"),
        None => "no-cache".to_string(),
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_str(&cache_control).expect("ascii"));
    if let Some(last_modified) = caching.last_modified.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::LAST_MODIFIED, last_modified);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        let etag = "\"abc\"";
        let mut headers = HeaderMap::new();
        assert!(!not_modified(&headers, etag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"x\", W/\"abc\""));
        assert!(not_modified(&headers, etag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(not_modified(&headers, etag));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert!(!not_modified(&headers, etag));
    }
}
