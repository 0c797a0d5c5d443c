//! Logging: readable lines by default, JSON with `KCA_LOG_FORMAT=json`, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// Log to stderr, as JSON lines when `KCA_LOG_FORMAT=json`.
pub fn init() {
    init_with_format(std::env::var("KCA_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json")));
}

/// Log to stderr, as JSON lines when `json`.
pub fn init_with_format(json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn,hyper=warn,rustls=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
