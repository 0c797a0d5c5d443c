#!/usr/bin/env bash
# The test command: sets up what the suite needs, then runs it. Safe to run again: each step
# only acts when something is missing or differs from its pin.
#
#   bash tests/run.sh [nextest arguments]   set up, then cargo nextest run --locked --no-fail-fast
#   bash tests/run.sh --setup-only          set up only (.ci/run does this before its lints)
#
# Set-up, as root on Debian 12:
#   - Debian packages: the programs the tests drive (haproxy, etcd, Chromium, openssl, psql, ...);
#     `apt-get update` runs only when one is missing;
#   - Python tools from tests/requirements.txt, every package pinned with `==` (pkilint,
#     prometheus-client, schemathesis and what they depend on);
#   - tests/browser's node modules (playwright-core) and tests/oidc's (oidc-provider, the OpenID
#     Provider of the single sign-on tests) with `npm ci` from their package-lock.json, again
#     whenever a lock file changes;
#   - Postgres on 127.0.0.1:5432, started if it is down.
# Once that is done, `cargo nextest run` alone runs the suite too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

setup_only=false
if [ "${1:-}" = "--setup-only" ]; then
    setup_only=true
    shift
fi

started=$(date +%s)
step() { echo "tests/run.sh: $* ($(($(date +%s) - started))s)"; }

# --- Debian packages -------------------------------------------------------------------------
export DEBIAN_FRONTEND=noninteractive
packages=(curl jq openssl sqlite3 postgresql-client haproxy etcd-server etcd-client chromium
    protobuf-compiler wrk golang-cfssl softhsm2 opensc)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    step "installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Part of the machine image, not installable from the registries this project uses.
for tool in cargo cargo-nextest python3 node npm kubectl terraform; do
    command -v "$tool" >/dev/null || { echo "tests/run.sh: $tool is missing (it is part of the machine image)" >&2; exit 1; }
done

# --- Python tools (pinned) -------------------------------------------------------------------
# With every pin installed already pip fetches nothing (about a second); a package whose
# installed version differs from its pin is replaced. `-m pip` has pyenv, where present, make
# shims for the new commands (schemathesis, lint_pkix_cert, ...).
python3 -m pip install -q --disable-pip-version-check --no-input --root-user-action=ignore \
    -r tests/requirements.txt

# --- Node modules of the browser and single sign-on tests (pinned by package-lock.json) ------
# npm ci starts from scratch each time, so it runs only when the lock file differs from the one
# last installed (kept beside the modules).
# tests/oidc holds the OpenID Provider of the single sign-on tests (oidc-provider), the same way.
for modules in tests/browser tests/oidc; do
    if ! cmp -s "$modules/package-lock.json" "$modules/node_modules/.kca-installed-lock.json"; then
        step "installing $modules node modules"
        npm ci --no-audit --no-fund --prefix "$modules" >/dev/null
        cp "$modules/package-lock.json" "$modules/node_modules/.kca-installed-lock.json"
    fi
done

# --- Postgres --------------------------------------------------------------------------------
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    step "starting Postgres"
    # pg_ctl waits until the server accepts connections. It refuses if the server is running but
    # not ready yet (starting up): then the poll below waits for it, 30 s at most.
    pg_ctlcluster --skip-systemctl-redirect 15 main start || echo "tests/run.sh: pg_ctlcluster start failed; waiting"
    deadline=$(($(date +%s) + 30))
    until pg_isready -h 127.0.0.1 -p 5432 -q; do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "tests/run.sh: Postgres does not answer on 127.0.0.1:5432" >&2; exit 1; }
        sleep 0.2
    done
fi

if $setup_only; then
    step "set up"
    exit 0
fi
step "cargo nextest run"
exec cargo nextest run --locked --no-fail-fast "$@"
