# Turns the raw runs of bench/run.sh into bench/out/results.json: medians of the repeated runs,
# ratios, and every budget line marked met or not.

def median: map(select(. != null)) | sort
  | if length == 0 then null
    elif length % 2 == 1 then .[length / 2 | floor]
    else (.[length / 2 - 1] + .[length / 2]) / 2 end;

def ratio($a; $b): if $a == null or $b == null or $b == 0 then null else $a / $b end;
def r($digits): if . == null then "-" else (. * pow(10; $digits) | round) / pow(10; $digits) | tostring end;
def pct: if . == null then "-" else (. * 100 | round | tostring) + "%" end;

($runs[0]) as $runs
| ($ceiling[0]) as $ceiling
| ($revocation[0]) as $revocation
| ($startup[0]) as $startup
| ($idle[0]) as $idle
| ($revoke_users[0]) as $revoke_users
| ($startup_large[0]) as $startup_large
| ($runs | group_by([.scenario, .target, .concurrency]) | map({
    scenario: .[0].scenario, target: .[0].target, concurrency: .[0].concurrency, runs: length,
    rps: (map(.rps) | median), p50_ms: (map(.p50_ms) | median), p99_ms: (map(.p99_ms) | median),
    cpu_ms_per_req: (map(.cpu_ms_per_req) | median),
    server_cpu_ms_per_req: (map(.server_cpu_ms_per_req) | median),
    db_cpu_ms_per_req: (map(.db_cpu_ms_per_req) | median),
    machine_busy_pct: (map(.machine_busy_pct) | median),
    other_cpu_ms_per_req: (map(.other_cpu_ms_per_req) | median),
    peak_rss_kb: (map(.peak_rss_kb) | max), requests: (map(.requests) | add),
    errors: (map(.errors) | add), stored: (map(.stored) | if any(. == null) then null else add end)
  })) as $groups
| def pick($s; $t; $c): [$groups[] | select(.scenario == $s and .target == $t and .concurrency == $c)][0];
  def ceiling($mode): [$ceiling[] | select(.mode == $mode) | .per_second] | median;
  def ceiling_cpu($mode): [$ceiling[] | select(.mode == $mode) | .cpu_ms_per_certificate] | median;
  def met($value; $ok): if $value == null then null else $ok end;
  def line($text; $value; $unit; $target; $ok; $why):
    {budget: $text, measured: $value, unit: $unit, target: $target, met: met($value; $ok), why: $why};
  # Throughput, then CPU per request (server + database), then how busy the machine was.
  def versus($a; $b): "\($a.rps | r(0)) vs \($b.rps | r(0)) req/s; CPU per request \($a.cpu_ms_per_req | r(3)) ms"
    + " (\($a.server_cpu_ms_per_req | r(3)) + db \($a.db_cpu_ms_per_req | r(3))) vs \($b.cpu_ms_per_req | r(3)) ms,"
    + " i.e. \(ratio($b.cpu_ms_per_req; $a.cpu_ms_per_req) | r(2))x by CPU; machine busy \($a.machine_busy_pct | r(0))% vs \($b.machine_busy_pct | r(0))%";
  (ceiling("generate-p256")) as $ceiling_generate
| (ceiling("csr")) as $ceiling_csr
| (ceiling_cpu("generate-p256")) as $ceiling_generate_cpu
| (ceiling_cpu("csr")) as $ceiling_csr_cpu
| (pick("issue"; "kca-pg"; 32)) as $k32
| (pick("issue"; "kca-pg-tcp"; 32)) as $k32_tcp
| (pick("issue"; "kca-pg-unix"; 32)) as $k32_unix
| (pick("issue"; "cfssl"; 32)) as $c32
| (pick("csr"; "kca-pg"; 32)) as $kcsr
| (pick("csr"; "cfssl"; 32)) as $ccsr
| (ratio($k32.rps; $k32_tcp.rps)) as $tls_vs_tcp
| ($revoke_users.p99_ms // null) as $revoke_user_p99
| ([$startup_large.restarts[]? | .ready_ms] | max) as $large_ready_ms
| ([$startup_large.restarts[]? | .hwm_kb] | max) as $large_hwm_kb
| (ratio($k32.rps; pick("issue"; "cfssl"; 32).rps)) as $vs_cfssl
| (ratio($k32.rps; pick("issue"; "cfssl-db"; 32).rps)) as $vs_cfssl_db
| (ratio($k32.rps; $ceiling_generate)) as $of_ceiling
| (ratio(pick("csr"; "kca-pg"; 32).rps; pick("csr"; "cfssl"; 32).rps)) as $csr_vs_cfssl
| (pick("crl"; "kca-pg"; 32).rps) as $crl_rps
| ([$revocation[] | select(.seeded_revoked == 100000) | .p99_ms][0]) as $revoke_p99
| (ratio(pick("issue"; "kca-1m"; 32).rps; pick("issue"; "kca-empty"; 32).rps)) as $stored_ratio
| ([$idle[] | select(.when == "before load") | .rss_kb] + [$startup[] | .rss_kb] | max) as $idle_rss
| ([$startup[] | .ready_ms] | max) as $ready_ms
| {
    meta: {
      date: $date, cpu: $cpu, cores: $cores, kernel: $kernel, load_at_end: $load, rustc: $rustc,
      kca_commit: $commit, kca_uncommitted_files: $dirty, build_profile: $profile,
      postgres: $postgres, sqlite: $sqlite, cfssl: $cfssl, wrk: $wrk,
      smoke: ($smoke == 1), seconds_per_run: $duration, repeats: $repeats,
      binary_bytes: $binary, stored_seed: $seeded, stored_seed_seconds: $seed_seconds,
      stored_revoked: $seeded_revoked
    },
    summary: {
      issue: [$groups[] | select(.scenario == "issue" and (.target | IN("kca-pg", "kca-pg-tcp", "kca-pg-unix", "kca-hsm", "kca-sqlite", "cfssl", "cfssl-db")))],
      csr: [$groups[] | select(.scenario == "csr")],
      crl: [$groups[] | select(.scenario | startswith("crl"))],
      stored: [$groups[] | select(.target == "kca-empty" or .target == "kca-1m")],
      ceiling: {generate_p256_per_s: $ceiling_generate, csr_per_s: $ceiling_csr, threads: 2,
        generate_p256_cpu_ms: $ceiling_generate_cpu, csr_cpu_ms: $ceiling_csr_cpu},
      ratios: {
        kca_pg_vs_cfssl_newcert_c32: $vs_cfssl, kca_pg_vs_cfssl_certdb_newcert_c32: $vs_cfssl_db,
        kca_pg_of_ceiling_c32: $of_ceiling, kca_pg_csr_vs_cfssl_sign_c32: $csr_vs_cfssl,
        kca_pg_cpu_efficiency_c32: ratio($ceiling_generate_cpu; $k32.cpu_ms_per_req),
        kca_pg_vs_cfssl_cpu_per_issuance_c32: ratio(pick("issue"; "cfssl"; 32).cpu_ms_per_req; $k32.cpu_ms_per_req),
        kca_pg_csr_vs_cfssl_sign_cpu_c32: ratio($ccsr.cpu_ms_per_req; $kcsr.cpu_ms_per_req),
        kca_pg_tls_vs_tcp_c32: $tls_vs_tcp,
        kca_hsm_vs_kca_pg_c32: ratio(pick("issue"; "kca-hsm"; 32).rps; $k32.rps), kca_pg_unix_vs_tcp_c32: ratio($k32_unix.rps; $k32_tcp.rps),
        stored_vs_empty_c32: $stored_ratio
      }
    },
    budget: [
      line("kubeconfig issuance c=32 (Postgres over TLS) >= 2x cfssl newcert storing nothing"; $vs_cfssl; "x"; 2;
        $vs_cfssl >= 2; versus($k32; $c32)),
      line("kubeconfig issuance c=32 >= 10x cfssl newcert storing into its certdb"; $vs_cfssl_db; "x"; 10;
        $vs_cfssl_db >= 10; versus($k32; pick("issue"; "cfssl-db"; 32))),
      line("kubeconfig issuance c=32 >= 30% of the in-process ceiling (2 threads)"; $of_ceiling; "of ceiling"; 0.3;
        $of_ceiling >= 0.3;
        "\($k32.rps | r(0)) vs \($ceiling_generate | r(0)) certificates/s; by CPU, the ceiling's \($ceiling_generate_cpu | r(3)) ms"
        + " is \(ratio($ceiling_generate_cpu; $k32.cpu_ms_per_req) | pct) of kca + Postgres's \($k32.cpu_ms_per_req | r(3)) ms per kubeconfig;"
        + " the ceiling has both cores to itself, kca shares them with Postgres and wrk (busy \($k32.machine_busy_pct | r(0))%)"),
      line("kubeconfig issuance c=32 p99 <= 50 ms"; $k32.p99_ms; "ms"; 50; $k32.p99_ms <= 50; "p50 \($k32.p50_ms | r(1)) ms"),
      line("CSR signing c=32 >= 1.5x cfssl sign storing nothing"; $csr_vs_cfssl; "x"; 1.5; $csr_vs_cfssl >= 1.5;
        versus($kcsr; $ccsr)),
      line("server CPU per issuance reported beside each throughput";
        ([$groups[] | select(.scenario == "issue" or .scenario == "csr") | .cpu_ms_per_req] | all(. != null)); ""; true;
        ([$groups[] | select(.scenario == "issue" or .scenario == "csr") | .cpu_ms_per_req] | all(. != null));
        "column CPU ms/req"),
      line("cached CRL fetch c=32 >= 15,000 req/s"; $crl_rps; "req/s"; 15000; $crl_rps >= 15000;
        "304: \(pick("crl304"; "kca-pg"; 32).rps | r(0)) req/s"),
      line("revocation to published CRL with 100,000 revoked entries p99 <= 250 ms"; $revoke_p99; "ms"; 250; $revoke_p99 <= 250;
        ([$revocation[] | select(.seeded_revoked == 100000)][0] | if . == null then "-" else
          "p50 \(.p50_ms | r(1)) ms over \(.revocations) revocations; CRL \(.crl_entries) entries" end)),
      line("revoke-user, a user holding \($revoke_users.certificates_per_user // "-") certificates, to published CRL, p99 <= 1 s";
        $revoke_user_p99; "ms"; 1000; $revoke_user_p99 <= 1000;
        ($revoke_users | if . == null then "-" else
          "p50 \(.p50_ms | r(0)) ms, max \(.max_ms | r(0)) ms over \(.revocations) users, one call each;"
          + " the CRL grew to \(.crl_entries) entries (\(.crl_bytes / 1e6 | r(1)) MB)" end)),
      line("issuance with \($seeded) stored certificates >= 90% of the empty-database rate"; $stored_ratio; "of empty"; 0.9;
        $stored_ratio >= 0.9; versus(pick("issue"; "kca-1m"; 32); pick("issue"; "kca-empty"; 32))),
      line("start-up with \($seeded) stored and \($seeded_revoked) revoked certificates: ready <= 2 s"; $large_ready_ms; "ms"; 2000;
        $large_ready_ms <= 2000;
        "worst of \($startup_large.restarts | length) starts: " + ([$startup_large.restarts[]? | .ready_ms | r(0)] | join(", "))
        + " ms; the CRL lists \($startup_large.crl_entries) entries"),
      line("start-up with \($seeded) stored and \($seeded_revoked) revoked certificates: peak RSS <= 150 MiB";
        (if $large_hwm_kb == null then null else $large_hwm_kb / 1024 end); "MiB"; 150; $large_hwm_kb <= 153600;
        "VmHWM 2 s after ready, each start: " + ([$startup_large.restarts[]? | .hwm_kb / 1024 | r(1)] | join(", ")) + " MiB"),
      line("kubeconfig issuance c=32, Postgres over TLS >= 85% of plain TCP"; $tls_vs_tcp; "of TCP"; 0.85; $tls_vs_tcp >= 0.85;
        versus($k32; $k32_tcp) + "; unix socket \($k32_unix.rps | r(0)) req/s, \($k32_unix.cpu_ms_per_req | r(3)) ms"),
      line("idle RSS <= 40 MiB"; (if $idle_rss == null then null else $idle_rss / 1024 end); "MiB"; 40; $idle_rss <= 40960;
        "largest of the SQLite starts and the servers before load"),
      line("ready in <= 1 s on SQLite"; $ready_ms; "ms"; 1000; $ready_ms <= 1000; "worst of \($startup | length) starts")
    ],
    runs: $runs, ceiling: $ceiling, revocation: $revocation, revoke_users: $revoke_users,
    startup: $startup, startup_large: $startup_large, idle: $idle
  }
