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

/// `Content-Disposition: attachment` for a file named `name` (RFC 6266): a `filename` with only
/// ASCII letters, digits, `-`, `.` and `_` (anything else becomes `_`), for clients that know no
/// better, and the exact name as `filename*` (RFC 8187, UTF-8, percent-encoded). Nothing a client
/// chose can close the quoted string or add a parameter.
pub fn attachment(name: &str) -> HeaderValue {
    let fallback: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') { c } else { '_' })
        .collect();
    let mut encoded = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    HeaderValue::from_str(&format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"))
        .expect("only visible ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_names_cannot_add_parameters() {
        let value = attachment("kubeconfig-prod-x\"; filename=\"evil.sh.yaml");
        assert_eq!(
            value.to_str().unwrap(),
            "attachment; filename=\"kubeconfig-prod-x___filename__evil.sh.yaml\"; \
             filename*=UTF-8''kubeconfig-prod-x%22%3B%20filename%3D%22evil.sh.yaml"
        );
        for name in ["a\\b", "a\r\nSet-Cookie: x=y", "\u{2028}", "José", "a%41", "../../etc/passwd"] {
            let value = attachment(name);
            let text = value.to_str().unwrap();
            let (quoted, extended) = text
                .strip_prefix("attachment; filename=\"")
                .and_then(|rest| rest.split_once("\"; filename*=UTF-8''"))
                .unwrap_or_else(|| panic!("{name:?}: {text}"));
            assert!(quoted.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)), "{text}");
            assert!(extended.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)), "{text}");
            assert_eq!(percent_decode(extended), name);
        }
    }

    fn percent_decode(text: &str) -> String {
        let mut bytes = Vec::new();
        let mut rest = text.as_bytes();
        while let Some((&first, tail)) = rest.split_first() {
            if first == b'%' {
                bytes.push(u8::from_str_radix(std::str::from_utf8(&tail[..2]).unwrap(), 16).unwrap());
                rest = &tail[2..];
            } else {
                bytes.push(first);
                rest = tail;
            }
        }
        String::from_utf8(bytes).unwrap()
    }

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
