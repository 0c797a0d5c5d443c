//! Prometheus metrics, kept in memory and rendered in the text exposition format (0.0.4).
//!
//! Counters and histograms are updated on the request path, so they are plain atomics behind a
//! map that is only written when a new label set first appears.

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the request latency histogram.
const LATENCY_BUCKETS: [f64; 12] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_micros: AtomicU64,
}

/// A family of counters by label set.
#[derive(Default)]
struct CounterFamily(RwLock<BTreeMap<Labels, AtomicU64>>);

impl CounterFamily {
    fn add(&self, labels: Labels, value: u64) {
        if let Some(counter) = self.0.read().get(&labels) {
            counter.fetch_add(value, Ordering::Relaxed);
            return;
        }
        self.0.write().entry(labels).or_default().fetch_add(value, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (labels, value) in self.0.read().iter() {
            let _ = writeln!(out, "{name}{} {}", format_labels(labels), value.load(Ordering::Relaxed));
        }
    }
}

/// The service's metrics.
#[derive(Default)]
pub struct Metrics {
    requests: CounterFamily,
    latency: RwLock<BTreeMap<Labels, Histogram>>,
    issued: CounterFamily,
    revoked: CounterFamily,
    crls_published: CounterFamily,
}

impl Metrics {
    /// One answered request, by method and matched route (never the raw path: bounded
    /// cardinality). `route` is the route's pattern or `unmatched`; `method` is bounded here by
    /// [`method_label`].
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let labels: Labels = vec![("method", method_label(method).to_string()), ("route", route.to_string())];
        let mut with_status = labels.clone();
        with_status.push(("status", status.to_string()));
        self.requests.add(with_status, 1);
        let seconds = elapsed.as_secs_f64();
        let record = |histogram: &Histogram| {
            for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&histogram.buckets) {
                if seconds <= *bound {
                    bucket.fetch_add(1, Ordering::Relaxed);
                }
            }
            histogram.count.fetch_add(1, Ordering::Relaxed);
            histogram.sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        };
        if let Some(histogram) = self.latency.read().get(&labels) {
            record(histogram);
            return;
        }
        record(self.latency.write().entry(labels).or_default());
    }

    pub fn certificate_issued(&self, cluster: &str, kind: &str, profile: &str) {
        self.issued.add(
            vec![
                ("cluster", cluster.to_string()),
                ("authority", kind.to_string()),
                ("profile", profile.to_string()),
            ],
            1,
        );
    }

    pub fn certificates_revoked(&self, cluster: &str, kind: &str, count: u64) {
        self.revoked.add(vec![("cluster", cluster.to_string()), ("authority", kind.to_string())], count);
    }

    /// A CRL signed and stored by this process (CRL Numbers follow the clock, so they no longer
    /// count publications).
    pub fn crl_published(&self) {
        self.crls_published.add(vec![], 1);
    }

    /// The counters and histograms, in text exposition format.
    pub fn render_counters(&self, out: &mut String) {
        self.requests.render(out, "kca_http_requests_total", "HTTP requests answered, by route and status.");
        let name = "kca_http_request_duration_seconds";
        let _ = writeln!(out, "# HELP {name} HTTP request latency, by route.\n# TYPE {name} histogram");
        for (labels, histogram) in self.latency.read().iter() {
            for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&histogram.buckets) {
                let mut with_le = labels.clone();
                with_le.push(("le", bound.to_string()));
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    format_labels(&with_le),
                    bucket.load(Ordering::Relaxed)
                );
            }
            let count = histogram.count.load(Ordering::Relaxed);
            let mut with_le = labels.clone();
            with_le.push(("le", "+Inf".to_string()));
            let _ = writeln!(out, "{name}_bucket{} {count}", format_labels(&with_le));
            let sum = histogram.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "{name}_sum{} {sum}", format_labels(labels));
            let _ = writeln!(out, "{name}_count{} {count}", format_labels(labels));
        }
        self.issued.render(
            out,
            "kca_certificates_issued_total",
            "Certificates issued, by cluster, authority and profile.",
        );
        self.revoked.render(
            out,
            "kca_certificates_revoked_total",
            "Certificates revoked, by cluster and authority.",
        );
        self.crls_published.render(
            out,
            "kca_crls_published_total",
            "CRLs signed and stored by this process.",
        );
    }
}

/// The `method` label of a request: one of the standard methods, else `other`. Clients choose
/// the method (any token, of any length); each distinct label value would be a time series kept
/// for the life of the process.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

/// `{a="x",b="y"}` with label values escaped, or nothing without labels.
pub fn format_labels(labels: &[(&'static str, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(name, value)| {
            let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            format!("{name}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Write one gauge family.
pub fn render_gauges(out: &mut String, name: &str, help: &str, samples: &[(Labels, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{} {value}", format_labels(labels));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_as_prometheus_text() {
        let metrics = Metrics::default();
        metrics.observe_request("GET", "/v1/clusters", 200, Duration::from_millis(3));
        metrics.observe_request("GET", "/v1/clusters", 200, Duration::from_millis(30));
        metrics.certificate_issued("prod", "operators", "user");
        let mut out = String::new();
        metrics.render_counters(&mut out);
        assert!(
            out.contains("kca_http_requests_total{method=\"GET\",route=\"/v1/clusters\",status=\"200\"} 2")
        );
        assert!(out.contains(
            "kca_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/clusters\",le=\"0.005\"} 1"
        ));
        assert!(
            out.contains("kca_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/clusters\"} 2")
        );
        assert!(out.contains(
            "kca_certificates_issued_total{cluster=\"prod\",authority=\"operators\",profile=\"user\"} 1"
        ));
    }

    #[test]
    fn invented_methods_share_one_label() {
        let metrics = Metrics::default();
        for i in 0..20 {
            let method = format!("INVENTED{}{i}", "X".repeat(1000));
            metrics.observe_request(&method, "unmatched", 405, Duration::from_millis(1));
        }
        metrics.observe_request("get", "unmatched", 405, Duration::from_millis(1));
        metrics.observe_request("DELETE", "/v1/clusters/{cluster}", 204, Duration::from_millis(1));
        let mut out = String::new();
        metrics.render_counters(&mut out);
        assert!(!out.contains("INVENTED"), "{out}");
        assert!(
            out.contains("kca_http_requests_total{method=\"other\",route=\"unmatched\",status=\"405\"} 21")
        );
        assert!(out.contains("method=\"DELETE\""));
        assert!(out.len() < 8 * 1024, "{} bytes", out.len());
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(format_labels(&[("a", "x\"y\\z".into())]), "{a=\"x\\\"y\\\\z\"}");
    }
}
