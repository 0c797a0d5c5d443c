# Reads `perf script -F ip,sym` of one process (samples separated by blank lines, innermost frame
# first) and prints the share of samples spent inside each part of kca (inclusive: a sample counts
# for every part it is under, so shares add up to more than 100%).
BEGIN {
    n = split("key generation|SigningKeyPair.*generate;" \
        "leaf assembly and CA signature|pki::leaf::issue_leaf;" \
        "CSR verification|pki::csr::verify_csr;" \
        "kubeconfig YAML (pki::kubeconfig::render)|pki::kubeconfig::render;" \
        "JSON in and out (serde_json)|serde_json::;" \
        "token verification|TokenService.*verify;" \
        "group commit to the database (recorder)|recorder::write_batches;" \
        "sqlx (all database work)|sqlx_core::|sqlx_postgres::;" \
        "TLS to the database|RustlsSocket;" \
        "HTTP (hyper)|hyper::;" \
        "TLS (rustls, HTTPS and database)|rustls::;" \
        "logging (tracing-subscriber)|tracing_subscriber::;" \
        "metrics|Metrics.*observe_request;" \
        "handing work to the blocking pool|spawn_blocking|blocking::pool::Spawner;" \
        "memory allocation (mimalloc)|malloc|_int_free|cfree|realloc|mi_free|_mi_;" \
        "kernel: TCP send|tcp_sendmsg;" \
        "kernel: TCP receive|tcp_recvmsg;" \
        "kernel: scheduler and futex waits|finish_task_switch|futex_wait|__schedule", parts, ";")
    for (i = 1; i <= n; i++) {
        split(parts[i], kv, "|")
        name[i] = kv[1]
        pattern[i] = substr(parts[i], length(kv[1]) + 2)
    }
    samples = 0; stack = ""
}
function flush() {
    if (stack == "") return
    samples++
    for (i = 1; i <= n; i++) if (stack ~ pattern[i]) hits[i]++
    stack = ""
}
/^[[:space:]]*$/ { flush(); next }
{ stack = stack "\n" $0 }
END {
    flush()
    printf "%d samples of kca\n", samples
    for (i = 1; i <= n; i++) if (samples > 0) printf "%6.1f%%  %s\n", 100 * hits[i] / samples, name[i]
}
