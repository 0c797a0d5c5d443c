# Reads `perf script -F ip,sym` of one process (samples separated by blank lines, innermost frame
# first) and splits its CPU into parts that add up to 100%: each sample goes to the part of the
# innermost frame that names one (self time, grouped by the nearest frame we recognise: a sample
# deep inside aws-lc's field arithmetic counts for key generation or for the CA signature,
# whichever called it; one inside malloc counts for allocation, whoever called malloc). With
# `-v us_per_request=N` (the process's CPU per request, measured without perf), each share is also
# given in microseconds per request.
BEGIN {
    # A frame is matched by the path it belongs to (see owner below).
    r = "^"
    n = split("memory allocation (mimalloc, page faults)|^_?mi_|^malloc|^realloc|^free$|^cfree|^__rust_(alloc|dealloc|realloc)|^do_anonymous_page|^clear_page;" \
        "kernel: TCP send|^tcp_sendmsg|^__tcp_push|^tcp_write_xmit|^__dev_queue_xmit|^ip_finish_output;" \
        "kernel: TCP receive (and the loopback delivery of what kca sends)|^tcp_recvmsg|^tcp_v4_rcv|^__netif_receive_skb|^net_rx_action;" \
        "kernel: waking and parking tasks (futex, epoll, scheduler)|^finish_task_switch|^futex_|^__schedule|^schedule$|^ep_poll|^do_epoll|^try_to_wake_up|^__x64_sys_futex|^__x64_sys_epoll;" \
        "kernel: other|^entry_SYSCALL|^syscall_exit|^do_syscall_64|^asm_|^exc_;" \
        "P-256 key generation (aws-lc)|SigningKeyPair.*generate|EC_KEY_generate|EVP_PKEY_keygen|ec_key_generate|EcdsaKeyPair.*generate;" \
        "CSR verification|" r "kca::pki::csr::;" \
        "CA signature (ECDSA P-256, aws-lc)|sign_bytes|ECDSA_sign|ECDSA_do_sign|EVP_DigestSign|SigningKeyPair::sign;" \
        "certificate assembly (DER)|" r "kca::pki::leaf::|" r "der::|" r "x509_cert::|" r "spki::|" r "const_oid::;" \
        "kubeconfig YAML|" r "kca::pki::kubeconfig::;" \
        "PEM and base64|" r "pem::|" r "base64::|to_pem;" \
        "token verification|" r "kca::token::|" r "jsonwebtoken::;" \
        "database: sqlx, batch building and the writer task|" r "sqlx_core::|" r "sqlx_postgres::|" r "kca::recorder::|" r "kca::store::;" \
        "JSON in and out (serde_json)|" r "serde_json::|" r "serde_core::|" r "serde::;" \
        "logging (tracing)|" r "tracing_subscriber::|" r "tracing_core::|" r "tracing::;" \
        "metrics|" r "kca::metrics::;" \
        "TLS for HTTPS (rustls)|" r "rustls::|" r "tokio_rustls::|aes_gcm|EVP_AEAD|aes_hw|gcm_|ghash;" \
        "HTTP (hyper, axum, tower)|" r "hyper::|" r "hyper_util::|" r "axum::|" r "axum_core::|" r "tower::|" r "tower_http::|" r "http::|" r "httparse::;" \
        "kca: handlers, policy, issuance (the rest of kca's own code)|" r "kca::;" \
        "async plumbing (tokio runtime, futures combinators)|" r "tokio::|" r "futures_util::|" r "futures_core::;" \
        "Rust standard library (formatting, copies, hashing)|" r "core::|" r "alloc::|" r "std::(fmt|io|collections|hash)|^__mem|^memcpy|^memmove|^memset", parts, ";")
    for (i = 1; i <= n; i++) {
        split(parts[i], kv, "|")
        name[i] = kv[1]
        pattern[i] = substr(parts[i], length(kv[1]) + 2)
        if (name[i] ~ /^TLS/) tls = i
    }
    name[n + 1] = "TLS to the database (rustls under sqlx)"
    name[n + 2] = "other (frames perf could not name or unwind)"
    samples = 0; frames = 0
}
function flush(   i, j, part) {
    if (frames == 0) return
    samples++
    part = n + 2
    for (j = 1; j <= frames && part == n + 2; j++)
        for (i = 1; i <= n; i++) if (frame[j] ~ pattern[i]) { part = i; break }
    if (part == tls) for (j = 1; j <= frames; j++) if (frame[j] ~ /sqlx_/) { part = n + 1; break }
    hits[part]++
    frames = 0
}
/^[[:space:]]*$/ { flush(); next }
{
    symbol = $0
    sub(/^[[:space:]]*[0-9a-f]+ /, "", symbol)
    frame[++frames] = owner(symbol)
}
# The path a frame belongs to: for `<Type as Trait>::method` the type's path (the trait's when the
# type is a generic parameter), else the symbol itself.
function owner(symbol,   inner, type, as) {
    if (substr(symbol, 1, 1) != "<") return symbol
    inner = substr(symbol, 2)
    as = index(inner, " as ")
    type = as > 0 ? substr(inner, 1, as - 1) : inner
    sub(/^(&|mut |dyn |\(|\[)+/, "", type)
    if (type ~ /::/) return type
    return as > 0 ? substr(inner, as + 4) : type
}
END {
    flush()
    if (us_per_request > 0)
        printf "%d samples; kca CPU %.1f us per request (measured without perf)\n", samples, us_per_request
    else
        printf "%d samples\n", samples
    for (i = 1; i <= n + 2; i++) {
        if (samples == 0 || hits[i] == 0) continue
        share = hits[i] / samples
        if (us_per_request > 0) printf "%6.1f%%  %6.1f us  %s\n", 100 * share, share * us_per_request, name[i]
        else printf "%6.1f%%  %s\n", 100 * share, name[i]
    }
}
