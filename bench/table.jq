# Prints bench/out/results.json as the text table of bench/run.sh (and BENCHMARKS.md).

def pad($n): tostring | if length >= $n then . else . + (" " * ($n - length)) end;
def lpad($n): tostring | if length >= $n then . else (" " * ($n - length)) + . end;
def num($digits): if . == null then "-" elif $digits == 0 then (round | tostring)
  else (. * pow(10; $digits) | round) / pow(10; $digits) | tostring end;
def mb: if . == null then "-" else (. / 1024 | num(1)) end;
def scenario_name: {issue: "kubeconfig, server key", csr: "kubeconfig, CSR", crl: "CRL fetch (200)",
  crl304: "CRL fetch (304)", crl_large: "large CRL fetch (200)", crl304_large: "large CRL fetch (304)"}[.] // .;
def row: "\(.scenario | scenario_name | pad(23)) \(.concurrency | lpad(4))  \(.target | pad(11)) \(.rps | num(0) | lpad(8)) \(.p50_ms | num(1) | lpad(8)) \(.p99_ms | num(1) | lpad(8))   \(.cpu_ms_per_req | num(3) | lpad(6)) = \(.server_cpu_ms_per_req | num(3) | lpad(6)) + \(.db_cpu_ms_per_req | num(3) | lpad(6))  \(.peak_rss_kb | mb | lpad(7)) \(.machine_busy_pct | num(0) | lpad(5))\(if .errors > 0 then "  \(.errors) errors" else "" end)";
def header: "\("scenario" | pad(23)) \("conc" | lpad(4))  \("target" | pad(11)) \("req/s" | lpad(8)) \("p50 ms" | lpad(8)) \("p99 ms" | lpad(8))   \("CPU ms/req = server + db" | pad(24))  \("RSS MB" | lpad(7)) \("busy%" | lpad(5))";
def order: {"kca-pg": 0, "kca-pg-tcp": 1, "kca-pg-unix": 2, "kca-hsm": 3, "kca-sqlite": 4, "cfssl": 5, "cfssl-db": 6,
  "kca-empty": 7, "kca-1m": 8}[.target] // 9;

.meta as $m
| .summary as $s
| [
  "kca benchmark, \($m.date): \($m.cpu), \($m.cores) cores; kca \($m.kca_commit) (\($m.build_profile)), Postgres \($m.postgres), SQLite \($m.sqlite), cfssl \($m.cfssl), wrk \($m.wrk)",
  "\($m.seconds_per_run) s per run, medians of \($m.repeats) runs\(if $m.smoke then " (SMOKE RUN: the numbers mean nothing)" else "" end); wrk on the same machine, HTTPS with keep-alive everywhere",
  "targets: kca-pg = kca on Postgres over TCP with TLS (sslmode=require), kca-pg-tcp = the same over plain TCP (sslmode=disable),",
  "  kca-pg-unix = over the unix socket, kca-hsm = kca-pg with its CA keys in a SoftHSM2 token (PKCS#11),",
  "  kca-sqlite = kca on SQLite, cfssl = cfssl serve storing nothing, cfssl-db = cfssl serve with its SQLite certdb",
  "",
  header,
  ($s.issue | sort_by(.concurrency, order)[] | row),
  ($s.csr | sort_by(order)[] | row),
  ($s.crl | sort_by((.scenario | test("large")), .scenario, order)[] | row),
  ($s.stored | sort_by(order)[] | row),
  "",
  "kca-empty / kca-1m: kca on a fresh Postgres database / one holding \($m.stored_seed) certificates (both over TLS)",
  "CRL fetch: the operators CRL, empty; large CRL fetch: the same once it lists the seeded revoked entries (one run)",
  "busy% = share of the whole machine's CPU in use during the run (servers, database, wrk and anything else running)",
  "ceiling, in-process (kca::issuance::sign, 2 threads): \($s.ceiling.generate_p256_per_s | num(0)) certificates/s with P-256 key generation (\($s.ceiling.generate_p256_cpu_ms | num(3)) ms CPU each), \($s.ceiling.csr_per_s | num(0)) from a CSR (\($s.ceiling.csr_cpu_ms | num(3)) ms)",
  "kca-pg c=32 CPU: ceiling CPU / (kca + Postgres CPU per issuance) = \($s.ratios.kca_pg_cpu_efficiency_c32 | if . == null then "-" else (. * 100 | num(0)) + "%" end); cfssl spends \($s.ratios.kca_pg_vs_cfssl_cpu_per_issuance_c32 | num(2))x the CPU per newcert that kca + Postgres spend per kubeconfig",
  "kca-pg c=32: \($s.ratios.kca_pg_vs_cfssl_newcert_c32 | num(2))x cfssl newcert, \($s.ratios.kca_pg_vs_cfssl_certdb_newcert_c32 | num(2))x cfssl newcert with certdb, \(($s.ratios.kca_pg_of_ceiling_c32 // null) | if . == null then "-" else (. * 100 | num(0)) end)% of the ceiling; CSR: \($s.ratios.kca_pg_csr_vs_cfssl_sign_c32 | num(2))x cfssl sign (\($s.ratios.kca_pg_csr_vs_cfssl_sign_cpu_c32 | num(2))x by CPU)",
  "CA keys in a PKCS#11 token (SoftHSM2), c=32: \([$s.issue[] | select(.target == "kca-hsm" and .concurrency == 32) | .rps][0] | num(0)) kubeconfigs/s beside \([$s.issue[] | select(.target == "kca-pg" and .concurrency == 32) | .rps][0] | num(0)) with sealed keys (kca-pg), \($s.ratios.kca_hsm_vs_kca_pg_c32 | if . == null then "-" else (. * 100 | num(0)) + "%" end)",
  "Postgres transport, c=32: TLS \($s.ratios.kca_pg_tls_vs_tcp_c32 | if . == null then "-" else (. * 100 | num(0)) + "%" end) of plain TCP, unix socket \($s.ratios.kca_pg_unix_vs_tcp_c32 | if . == null then "-" else (. * 100 | num(0)) + "%" end) of plain TCP",
  "",
  "revocation to published CRL (kca-pg, sequential revokes, each verified in the CRL fetched after it):",
  (.revocation[] | "  \(.seeded_revoked | lpad(7)) seeded revoked: p50 \(.p50_ms | num(1)) ms, p90 \(.p90_ms | num(1)) ms, p99 \(.p99_ms | num(1)) ms, max \(.max_ms | num(1)) ms over \(.revocations) revocations; CRL \(.crl_entries) entries, \(.crl_bytes) bytes"),
  (.revoke_users | if . == null then "revoke-user: no result" else
    "revoke-user (one call revokes every certificate of a user, then publishes the CRL): \(.revocations) users of \(.certificates_per_user) certificates: p50 \(.p50_ms | num(1)) ms, max \(.max_ms | num(1)) ms; CRL \(.crl_entries) entries, \(.crl_bytes) bytes" end),
  "",
  "start-up on SQLite (spawn to first 200 on /readyz): " + ([.startup[] | "\(.kind) \(.ready_ms | num(0)) ms"] | join(", ")),
  "start-up on Postgres (TLS) with \($m.stored_seed) stored and \($m.stored_revoked) revoked certificates, CRL of \(.startup_large.crl_entries // "-") entries: "
    + ([.startup_large.restarts[]? | "ready \(.ready_ms | num(0)) ms, peak \(.hwm_kb | mb) MB"] | join("; ")),
  "idle RSS: " + ([.startup[] | "\(.kind) start \(.rss_kb | mb) MB"] + [.idle[] | "\(.target) \(.when) \(.rss_kb | mb) MB"] | join(", ")),
  "\($m.build_profile) binary: \($m.binary_bytes / 1048576 | num(1)) MiB",
  "",
  "budget:",
  (.budget[] | "  [\(if .met == true then "met" elif .met == false then "NOT MET" else "n/a" end)] \(.budget): \(if (.measured | type) == "number" then (.measured | num(2)) else (.measured | tostring) end) \(.unit)",
    "        \(.why)")
] | .[]
