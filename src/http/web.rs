//! The web UI: the static files of `web/`, embedded in the binary and served at `/` under a strict
//! Content-Security-Policy (this origin only; no inline script or style).

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::routing::get;

use super::download::{Caching, cacheable, etag_of};
use crate::app::AppState;

/// The policy of every UI file. The UI needs nothing else: its script and style come from this
/// origin, it talks to this origin's API, and downloads are `blob:` links, which need no source.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: [Asset; 6] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../web/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/app.js"),
    },
    Asset {
        path: "/api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/api.js"),
    },
    Asset {
        path: "/ui.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/ui.js"),
    },
    Asset {
        path: "/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../web/app.css"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../web/favicon.svg"),
    },
];

static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| ASSETS.iter().map(|a| etag_of(a.body)).collect());

/// The UI's routes, to merge beside the API.
pub fn router() -> Router<AppState> {
    (0..ASSETS.len()).fold(Router::new(), |router, index| {
        router.route(ASSETS[index].path, get(move |headers: HeaderMap| async move { serve(index, &headers) }))
    })
}

fn serve(index: usize, headers: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    // `no-cache` with an ETag: the browser revalidates on every load (a 304 costs one round trip),
    // so the UI of a new kca binary shows at once, never a mix of old and new modules.
    let mut response =
        cacheable(headers, &ETAGS[index], asset.content_type, Caching::default(), || asset.body);
    response
        .headers_mut()
        .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(path: &str) -> &'static str {
        let asset = ASSETS.iter().find(|a| a.path == path).expect("an asset");
        std::str::from_utf8(asset.body).expect("UTF-8")
    }

    #[test]
    fn the_page_references_only_served_files_and_nothing_inline() {
        let html = text("/");
        for reference in ["/app.css", "/app.js", "/favicon.svg"] {
            assert!(html.contains(&format!("\"{reference}\"")), "index.html does not load {reference}");
        }
        for module in ["./api.js", "./ui.js"] {
            assert!(text("/app.js").contains(module), "app.js does not import {module}");
            assert!(ASSETS.iter().any(|a| a.path == &module[1..]), "{module} is not served");
        }
        // The CSP refuses inline script and style: keep the page from needing them.
        assert!(!html.contains(" style="), "index.html has a style attribute");
        assert!(!html.contains("<style"), "index.html has an inline style sheet");
        assert_eq!(html.matches("<script").count(), 1, "index.html has more than the module script");
        let handler = html.split(" on").skip(1).any(|rest| {
            let name_len = rest.chars().take_while(char::is_ascii_lowercase).count();
            name_len > 0 && rest[name_len..].starts_with('=')
        });
        assert!(!handler, "index.html has an inline event handler");
    }

    #[test]
    fn nothing_is_fetched_from_elsewhere() {
        for asset in ASSETS.iter().filter(|a| a.content_type != "image/svg+xml") {
            // The only absolute URL is the example API server in a placeholder.
            let body = std::str::from_utf8(asset.body).unwrap().replace("https://k8s.example.com", "");
            assert!(!body.contains("://"), "{} refers to another origin", asset.path);
        }
    }
}
