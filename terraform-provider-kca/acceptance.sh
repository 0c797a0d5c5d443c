#!/usr/bin/env bash
# Acceptance test of terraform-provider-kca: builds the provider and kca, starts a real kca on a
# free loopback port with a throw-away data directory, and drives the real `terraform` through
# apply, plan, replacement, drift, import and destroy, checking kca's side of each step with curl;
# before that, it checks the plugin's mutual TLS by hand (only Terraform's certificate is let in).
#
#   terraform-provider-kca/acceptance.sh
#
# Needs cargo, protoc, terraform >= 1.11, curl (with HTTP/2), jq, kubectl and openssl. Knobs:
# TERRAFORM (binary), STEP_TIMEOUT, BUILD_TIMEOUT, TOTAL_TIMEOUT (seconds), KEEP_LOGS=1 (keep the
# work directory), PROVIDER_TARGET_DIR and KCA_TARGET_DIR (cargo target directories; default
# CARGO_TARGET_DIR, else each package's target/).
#
# Only 127.0.0.1 is contacted: the provider comes from a dev_overrides directory (no `terraform
# init`, no registry) and Terraform's version check is disabled. Every step is time-bounded, kca
# is killed by its pid on exit, and any failed check exits non-zero.
set -euo pipefail

# The whole run is bounded too: on overrun, timeout signals the run's process group (this script,
# kca, terraform), and the EXIT trap below still cleans up.
if [[ -z "${KCA_ACCEPTANCE_BOUNDED:-}" ]]; then
    export KCA_ACCEPTANCE_BOUNDED=1
    exec timeout "${TOTAL_TIMEOUT:-3600}" bash "$(realpath "${BASH_SOURCE[0]}")" "$@"
fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
TERRAFORM=${TERRAFORM:-terraform}
STEP_TIMEOUT=${STEP_TIMEOUT:-300}   # seconds, any one terraform/curl step
BUILD_TIMEOUT=${BUILD_TIMEOUT:-2400} # seconds, each cargo build (2 cores, cold cache)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kca-tf-acc.XXXXXX")
KCA_PID=""
PLUGIN_PID=""
PASSED=0
STARTED=$(date +%s)

cleanup() {
    local rc=$?
    if [[ -n "$PLUGIN_PID" ]] && kill -0 "$PLUGIN_PID" 2>/dev/null; then
        kill "$PLUGIN_PID" 2>/dev/null || true
        wait "$PLUGIN_PID" 2>/dev/null || true
    fi
    if [[ -n "$KCA_PID" ]] && kill -0 "$KCA_PID" 2>/dev/null; then
        kill "$KCA_PID" 2>/dev/null || true
        wait "$KCA_PID" 2>/dev/null || true
    fi
    rm -f "$WORK/auth.header" # the admin token; the rest of a failed run is kept for diagnosis
    if [[ $rc -ne 0 ]]; then
        echo "FAILED (exit $rc) after $PASSED checks; logs kept in $WORK (kca.log, tf-*.log)" >&2
    elif [[ -n "${KEEP_LOGS:-}" ]]; then
        echo "logs kept in $WORK (kca.log, tf-*.log)"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '\n== %s\n' "$*"; }
ok() { PASSED=$((PASSED + 1)); printf 'ok %2d - %s\n' "$PASSED" "$*"; }
fail() { printf 'not ok - %s\n' "$*" >&2; exit 1; }

for tool in cargo curl jq openssl kubectl "$TERRAFORM"; do
    command -v "$tool" >/dev/null || fail "missing tool: $tool"
done
command -v protoc >/dev/null || [[ -n "${PROTOC:-}" ]] ||
    fail "missing protoc (Debian: apt-get install protobuf-compiler), needed to build the plugin protocol"

# --- build -------------------------------------------------------------------------------------
log "building the provider and kca"
t0=$(date +%s)
PROVIDER_TARGET=${PROVIDER_TARGET_DIR:-${CARGO_TARGET_DIR:-$HERE/target}}
KCA_TARGET=${KCA_TARGET_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}}
(cd "$HERE" && CARGO_TARGET_DIR="$PROVIDER_TARGET" timeout "$BUILD_TIMEOUT" cargo build --quiet)
t1=$(date +%s)
(cd "$ROOT" && CARGO_TARGET_DIR="$KCA_TARGET" timeout "$BUILD_TIMEOUT" cargo build --quiet)
t2=$(date +%s)
echo "provider build: $((t1 - t0))s, kca build: $((t2 - t1))s"
mkdir -p "$WORK/plugins"
PLUGIN="$WORK/plugins/terraform-provider-kca"
cp "$PROVIDER_TARGET/debug/terraform-provider-kca" "$PLUGIN"
KCA_BIN="$KCA_TARGET/debug/kca"

# --- the plugin's mutual TLS -------------------------------------------------------------------
log "the plugin lets in only the client certificate Terraform passes in PLUGIN_CLIENT_CERT"
MTLS="$WORK/mtls"
mkdir -p "$MTLS"
COOKIE=d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2 # go-plugin's, for Terraform
# Client certificates like Terraform's own: self-signed CA certificates with P-521 keys.
client_cert() { # client_cert NAME
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-521 -nodes -days 1 \
        -subj "/O=HashiCorp/CN=localhost" -addext "subjectAltName=DNS:localhost" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,digitalSignature,keyEncipherment,keyAgreement,keyCertSign" \
        -addext "extendedKeyUsage=clientAuth,serverAuth" \
        -keyout "$MTLS/$1.key" -out "$MTLS/$1.pem" 2>/dev/null
}
client_cert terraform
client_cert other # same subject, another key
rc=0
env -u PLUGIN_CLIENT_CERT TF_PLUGIN_MAGIC_COOKIE=$COOKIE timeout 10 "$PLUGIN" >"$MTLS/nocert.out" 2>"$MTLS/nocert.err" || rc=$?
[[ $rc != 0 && $rc != 124 && ! -s "$MTLS/nocert.out" ]] && grep -q PLUGIN_CLIENT_CERT "$MTLS/nocert.err" ||
    fail "the plugin started without PLUGIN_CLIENT_CERT (exit $rc): $(cat "$MTLS/nocert.out" "$MTLS/nocert.err")"
ok "without PLUGIN_CLIENT_CERT the plugin refuses to start (exit $rc, no handshake line)"

PLUGIN_CLIENT_CERT=$(cat "$MTLS/terraform.pem") TF_PLUGIN_MAGIC_COOKIE=$COOKIE \
    "$PLUGIN" >"$MTLS/stdout" 2>"$MTLS/stderr" &
PLUGIN_PID=$!
for _ in $(seq 100); do [[ -s "$MTLS/stdout" ]] && break; sleep 0.1; done
IFS='|' read -r core proto net addr wire cert_b64 <"$MTLS/stdout" || fail "no handshake line from the plugin"
[[ "$core|$proto|$net|$wire" == "1|6|tcp|grpc" && "$addr" == 127.0.0.1:* ]] ||
    fail "handshake line: $(cat "$MTLS/stdout")"
while (( ${#cert_b64} % 4 )); do cert_b64+="="; done # go-plugin's base64 has no padding
base64 -d <<<"$cert_b64" | openssl x509 -inform DER -out "$MTLS/plugin.pem" || fail "plugin certificate in the handshake line"
PLUGIN_PORT=${addr##*:}
ok "handshake line $core|$proto|$net|$addr|$wire|<certificate: $(openssl x509 -noout -subject -in "$MTLS/plugin.pem")>"

# One gRPC call (GetMetadata, an empty message) over HTTP/2, trusting only the plugin's certificate.
printf '\0\0\0\0\0' >"$MTLS/empty.grpc"
grpc() { # grpc NAME [curl args...] -> "HTTP_CODE HTTP_VERSION" on stdout; curl's exit code
    local name=$1
    shift
    curl -sS --http2 --max-time 10 --cacert "$MTLS/plugin.pem" --resolve "localhost:$PLUGIN_PORT:127.0.0.1" \
        -H 'content-type: application/grpc' -H 'te: trailers' --data-binary "@$MTLS/empty.grpc" \
        -o "$MTLS/$name.body" -w '%{http_code} %{http_version}' "$@" \
        "https://localhost:$PLUGIN_PORT/tfplugin6.Provider/GetMetadata" 2>"$MTLS/$name.err"
}
refusal() { # refusal N: the plugin's Nth "refused a connection" line on stderr, waited for
    local line=""
    for _ in $(seq 50); do
        line=$(grep "refused a connection" "$MTLS/stderr" | sed -n "$1p")
        [[ -n "$line" ]] && break
        sleep 0.1
    done
    echo "${line#*: }"
}
rc=0; res=$(grpc none) || rc=$?
[[ $rc != 0 && "$res" == "000 0" ]] || fail "a gRPC call without a client certificate got through: $res (curl exit $rc)"
why=$(refusal 1)
[[ "$why" == *"peer sent no certificates"* ]] || fail "the plugin's reason for refusing: $why"
ok "gRPC over TLS without a client certificate: refused in the TLS handshake (curl exit $rc; plugin: \"$why\")"
rc=0; res=$(grpc other --cert "$MTLS/other.pem" --key "$MTLS/other.key") || rc=$?
[[ $rc != 0 && "$res" == "000 0" ]] || fail "a gRPC call with another certificate got through: $res (curl exit $rc)"
why=$(refusal 2)
[[ "$why" == *"ApplicationVerificationFailure"* ]] || fail "the plugin's reason for refusing: $why"
ok "gRPC over TLS with another P-521 certificate (same subject): refused (curl exit $rc; plugin: \"$why\")"
rc=0; res=$(grpc pinned --cert "$MTLS/terraform.pem" --key "$MTLS/terraform.key") || rc=$?
[[ $rc == 0 && "$res" == "200 2" ]] || fail "the pinned certificate was refused: $res (curl exit $rc): $(cat "$MTLS/pinned.err")"
grep -qa kca_component_certificate "$MTLS/pinned.body" || fail "GetMetadata does not list kca_component_certificate"
ok "gRPC over TLS with the pinned P-521 certificate: HTTP/2 200, GetMetadata lists the provider's resources"
s_client() { # s_client TLS_VERSION_FLAG [openssl args...]: a bare handshake; openssl's exit code
    local version=$1
    shift
    openssl s_client -connect "127.0.0.1:$PLUGIN_PORT" -servername localhost -CAfile "$MTLS/plugin.pem" \
        -verify_return_error -alpn h2 "$version" "$@" </dev/null >"$MTLS/s_client.out" 2>&1
}
s_client -tls1_2 && fail "openssl s_client (TLS 1.2) without a client certificate completed the handshake"
s_client -tls1_2 -cert "$MTLS/other.pem" -key "$MTLS/other.key" &&
    fail "openssl s_client (TLS 1.2) with another certificate completed the handshake"
s_client -tls1_2 -cert "$MTLS/terraform.pem" -key "$MTLS/terraform.key" ||
    { cat "$MTLS/s_client.out" >&2; fail "openssl s_client (TLS 1.2) with the pinned certificate failed"; }
refused=$(grep -c "refused a connection" "$MTLS/stderr" || true)
[[ $refused -ge 4 ]] || fail "the plugin logged $refused refused connections, expected 4: $(cat "$MTLS/stderr")"
ok "openssl s_client, TLS 1.2: handshake fails without a certificate and with another one, completes with the pinned one; plugin logged $refused refusals"
kill "$PLUGIN_PID" && wait "$PLUGIN_PID" 2>/dev/null || true
PLUGIN_PID=""

# --- kca ---------------------------------------------------------------------------------------
log "starting kca"
export KCA_DATA_DIR="$WORK/data"
KCA="" CACERT="$KCA_DATA_DIR/tls/dev-cert.pem"
# A port below the kernel's ephemeral range (32768+), so no outgoing connection holds it; kca is
# started again on another port if it still finds its port taken.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for attempt in 1 2 3 4 5; do
    PORT=$((20000 + RANDOM % 12000))
    port_free "$PORT" || continue
    "$KCA_BIN" serve --listen "127.0.0.1:$PORT" >"$WORK/kca.log" 2>&1 &
    KCA_PID=$!
    KCA="https://127.0.0.1:$PORT"
    CACERT="$KCA_DATA_DIR/tls/dev-cert.pem"
    for _ in $(seq 100); do
        kill -0 "$KCA_PID" 2>/dev/null || break
        [[ -f "$CACERT" ]] && curl -sf --max-time 2 --cacert "$CACERT" "$KCA/readyz" >/dev/null && break
        sleep 0.3
    done
    kill -0 "$KCA_PID" 2>/dev/null && break
    grep -q "Address already in use" "$WORK/kca.log" || { cat "$WORK/kca.log" >&2; fail "kca exited at start"; }
    echo "port $PORT taken, attempt $attempt"
done
curl -sf --max-time 2 --cacert "$CACERT" "$KCA/readyz" >/dev/null || { cat "$WORK/kca.log" >&2; fail "kca not ready"; }
TOKEN=$(timeout 60 "$KCA_BIN" token create --subject terraform --scope admin --ttl 2h)
[[ -n "$TOKEN" ]] || fail "no token"
echo "kca pid $KCA_PID on $KCA, data in $KCA_DATA_DIR"

# curl against kca as the admin; the token goes in a header file, never on a command line.
printf 'Authorization: Bearer %s\n' "$TOKEN" >"$WORK/auth.header"
chmod 600 "$WORK/auth.header"
api() { # api METHOD PATH [JSON] -> body on stdout; fails on a non-2xx answer
    local args=(-sS --fail-with-body --max-time 30 --cacert "$CACERT" -H "@$WORK/auth.header" -X "$1" "$KCA$2")
    [[ $# -ge 3 ]] && args+=(-H 'Content-Type: application/json' --data "$3")
    curl "${args[@]}"
}
api_status() { # api_status METHOD PATH -> HTTP status only
    curl -sS -o /dev/null -w '%{http_code}' --max-time 30 --cacert "$CACERT" -H "@$WORK/auth.header" \
        -X "$1" "$KCA$2"
}

# --- terraform ---------------------------------------------------------------------------------
cat >"$WORK/terraform.rc" <<EOF
disable_checkpoint = true
provider_installation {
  dev_overrides {
    "registry.terraform.io/kca/kca" = "$WORK/plugins"
  }
  direct {}
}
EOF
export TF_CLI_CONFIG_FILE="$WORK/terraform.rc" TF_IN_AUTOMATION=1 TF_INPUT=0 CHECKPOINT_DISABLE=1
export TF_DATA_DIR="$WORK/tf/.terraform"
export KCA_URL="$KCA" KCA_TOKEN="$TOKEN" KCA_CACERT="$CACERT" # KCA_CACERT as a path here
TF="$WORK/tf"
mkdir -p "$TF"
SUFFIX=$(date +%s | tail -c 6)$RANDOM
NAME="tf-acc-$SUFFIX"
IMPORTED="tf-imp-$SUFFIX"

cat >"$TF/main.tf" <<EOF
terraform {
  required_providers {
    kca = { source = "kca/kca" }
  }
}

provider "kca" {} # url, token and ca_cert_pem from KCA_URL, KCA_TOKEN, KCA_CACERT

variable "groups" { type = list(string) }
variable "early_renewal_seconds" { type = number }
variable "server" { type = string }
# From rotation.auto.tfvars, rewritten by the steps below.
variable "rotation_round" { type = string }
variable "retire_previous" { type = bool }
variable "component_ttl" { type = number }

resource "kca_cluster" "main" {
  name   = "$NAME"
  server = var.server
  labels = { env = "test" }
  policy {
    max_ttl_seconds  = 28800
    allowed_profiles = ["etcd-healthcheck-client"]
  }
}

resource "kca_kubeconfig" "alice" {
  cluster               = kca_cluster.main.id
  user                  = "alice"
  groups                = var.groups
  ttl_seconds           = 7200
  early_renewal_seconds = var.early_renewal_seconds
}

# A key made outside kca and Terraform: only its CSR goes in, so no private key is in the state.
resource "kca_kubeconfig" "bob" {
  cluster = kca_cluster.main.id
  user    = "bob"
  csr_pem = file("\${path.module}/bob.csr")
}

data "kca_authority" "operators" {
  cluster = kca_cluster.main.name
  kind    = "operators"
}

data "kca_client_bundle" "proxy" {
  cluster = kca_cluster.main.id
  kinds   = ["operators", "control-plane"]
}

# A component certificate under a profile: the etcd CA signs it.
resource "kca_component_certificate" "etcd_health" {
  cluster               = kca_cluster.main.id
  profile               = "etcd-healthcheck-client"
  ttl_seconds           = var.component_ttl
  early_renewal_seconds = 600
}

# Rotating the kubelet CA (no output reads its bundle, so a rotation changes no output).
resource "kca_authority_rotation" "kubelet" {
  cluster         = kca_cluster.main.id
  kind            = "kubelet"
  triggers        = { round = var.rotation_round }
  retire_previous = var.retire_previous
}

data "kca_cluster_endpoints" "main" {
  cluster = kca_cluster.main.name
  kinds   = ["operators", "control-plane"]
}

output "component_serial" { value = kca_component_certificate.etcd_health.serial }
output "component_certificate" { value = kca_component_certificate.etcd_health.certificate_pem }
output "component_ca" { value = kca_component_certificate.etcd_health.ca_pem }
output "component_authority" { value = kca_component_certificate.etcd_health.authority }
output "component_not_after" { value = kca_component_certificate.etcd_health.not_after }
output "component_key" {
  value     = kca_component_certificate.etcd_health.private_key_pem
  sensitive = true
}
output "rotation" {
  value = {
    id                  = kca_authority_rotation.kubelet.id
    generation          = kca_authority_rotation.kubelet.generation
    previous_generation = kca_authority_rotation.kubelet.previous_generation
    previous_retired    = kca_authority_rotation.kubelet.previous_retired
    fingerprint         = kca_authority_rotation.kubelet.fingerprint_sha256
  }
}
output "endpoints" {
  value = {
    ca_pem_urls     = data.kca_cluster_endpoints.main.ca_pem_urls
    crl_urls        = data.kca_cluster_endpoints.main.crl_urls
    crl_pem_urls    = data.kca_cluster_endpoints.main.crl_pem_urls
    client_ca_url   = data.kca_cluster_endpoints.main.client_ca_url
    client_crl_url  = data.kca_cluster_endpoints.main.client_crl_url
    revoked_map_url = data.kca_cluster_endpoints.main.revoked_map_url
  }
}
output "cluster_id" { value = kca_cluster.main.id }
output "serial" { value = kca_kubeconfig.alice.serial }
output "not_after" { value = kca_kubeconfig.alice.not_after }
output "default_ttl" { value = kca_cluster.main.policy.default_ttl_seconds }
output "ca_kinds" { value = sort(keys(kca_cluster.main.ca_pem)) }
output "operators_fingerprint" { value = kca_cluster.main.ca_fingerprints["operators"] }
output "bundle_matches" { value = data.kca_authority.operators.bundle_pem == kca_cluster.main.ca_pem["operators"] }
output "crl_url" { value = data.kca_authority.operators.crl_url }
output "client_ca_certs" { value = length(regexall("BEGIN CERTIFICATE", data.kca_client_bundle.proxy.ca_pem)) }
output "client_crls" { value = length(regexall("BEGIN X509 CRL", data.kca_client_bundle.proxy.crl_pem)) }
output "kubeconfig" {
  value     = kca_kubeconfig.alice.kubeconfig
  sensitive = true
}
output "bob_serial" { value = kca_kubeconfig.bob.serial }
output "bob_certificate" { value = kca_kubeconfig.bob.certificate_pem }
output "bob_kubeconfig" {
  value     = kca_kubeconfig.bob.kubeconfig
  sensitive = true
}
EOF
vars() { # vars GROUPS_JSON EARLY SERVER
    printf 'groups = %s\nearly_renewal_seconds = %s\nserver = "%s"\n' "$1" "$2" "$3" >"$TF/terraform.tfvars"
}
SERVER="https://k8s.acc.test:6443"
vars '["dev"]' 600 "$SERVER"
rotation_vars() { # rotation_vars ROUND RETIRE_PREVIOUS COMPONENT_TTL
    printf 'rotation_round = "%s"\nretire_previous = %s\ncomponent_ttl = %s\n' "$1" "$2" "$3" >"$TF/rotation.auto.tfvars"
}
rotation_vars 1 false 86400
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=bob \
    -keyout "$WORK/bob.key" -out "$TF/bob.csr" 2>/dev/null

N=0
tf() { # tf ARGS... -> output in $WORK/tf-N.log, shown on failure
    N=$((N + 1))
    local out="$WORK/tf-$N-$1.log" rc=0
    (cd "$TF" && timeout "$STEP_TIMEOUT" "$TERRAFORM" "$@" -no-color >"$out" 2>&1) || rc=$?
    LAST_LOG=$out
    return $rc
}
tf_ok() { tf "$@" || { cat "$LAST_LOG" >&2; fail "terraform $*"; }; }
expect_plan() { # expect_plan CODE WHAT: `terraform plan -detailed-exitcode` must exit with CODE
    local rc=0
    tf plan -input=false -detailed-exitcode || rc=$?
    [[ $rc == "$1" ]] || { cat "$LAST_LOG" >&2; fail "$2: plan exit code $rc, expected $1"; }
}
# The dev_overrides warning goes to stderr on every command: keep it out of the report.
out() { (cd "$TF" && "$TERRAFORM" output -no-color -raw "$1" 2>>"$WORK/tf-output.log"); }
out_json() { (cd "$TF" && "$TERRAFORM" output -no-color -json "$1" 2>>"$WORK/tf-output.log" | jq -c .); }

log "apply creates a cluster and a kubeconfig"
tf_ok apply -input=false -auto-approve
CLUSTER_ID=$(out cluster_id)
SERIAL1=$(out serial)
cluster=$(api GET "/v1/clusters/$NAME")
[[ $(jq -r .id <<<"$cluster") == "$CLUSTER_ID" ]] || fail "cluster $NAME not in kca with id $CLUSTER_ID"
[[ $(jq -r .policy.max_ttl_seconds <<<"$cluster") == 28800 ]] || fail "policy.max_ttl_seconds not applied"
[[ $(jq -r .labels.env <<<"$cluster") == test ]] || fail "labels not applied"
ok "cluster $NAME created in kca (id $CLUSTER_ID, policy and labels applied)"
[[ $(out default_ttl) == $(jq -r .policy.default_ttl_seconds <<<"$cluster") ]] || fail "server default policy not in state"
[[ $(out_json ca_kinds) == '["aggregation","control-plane","etcd","kubelet","operators"]' ]] ||
    fail "ca_pem does not hold the five kinds: $(out_json ca_kinds)"
[[ $(out operators_fingerprint) == $(jq -r '.authorities[] | select(.kind=="operators") | .fingerprint_sha256' <<<"$cluster" | head -1) ]] ||
    fail "operators fingerprint differs from kca's"
ok "state has kca's policy defaults, the five CA PEMs and their fingerprints"
cert=$(api GET "/v1/clusters/$CLUSTER_ID/certificates/$SERIAL1")
[[ $(jq -r .status <<<"$cert") == active && $(jq -r .common_name <<<"$cert") == alice ]] ||
    fail "certificate $SERIAL1 not active for alice: $cert"
[[ $(jq -c .groups <<<"$cert") == '["dev"]' ]] || fail "groups of $SERIAL1: $(jq -c .groups <<<"$cert")"
# Read the kubeconfig the way kubectl does (kca writes every scalar quoted), not with grep.
out kubeconfig >"$WORK/alice.kubeconfig"
kubeconfig_field() { kubectl config view --kubeconfig "$WORK/alice.kubeconfig" --raw -o "jsonpath=$1"; }
[[ -n $(kubeconfig_field '{.users[0].user.client-key-data}') && $(kubeconfig_field '{.clusters[0].cluster.server}') == "$SERVER" ]] ||
    fail "kubeconfig lacks the key or the server"
ok "kubeconfig issued: certificate $SERIAL1 active in kca (CN alice, O dev), YAML with key and server"
BOB=$(out bob_serial)
[[ $(api GET "/v1/clusters/$CLUSTER_ID/certificates/$BOB" | jq -r .common_name) == bob ]] || fail "bob's certificate"
[[ $(openssl x509 -noout -pubkey <<<"$(out bob_certificate)") == $(openssl pkey -pubout -in "$WORK/bob.key") ]] ||
    fail "bob's certificate does not certify the CSR's key"
state=$(cd "$TF" && "$TERRAFORM" state pull 2>/dev/null)
[[ $(jq -r '.resources[] | select(.name=="bob") | .instances[0].attributes.private_key_pem' <<<"$state") == null ]] ||
    fail "a private key is in the state for the CSR kubeconfig"
grep -q "client-key-data" <<<"$(out bob_kubeconfig)" && fail "bob's kubeconfig holds a key"
grep -qF "$(sed -n 2p "$WORK/bob.key")" <<<"$state" && fail "bob's private key is in the state"
ok "csr_pem: certificate $BOB certifies the CSR's key; no private key in the state or the kubeconfig"
[[ $(out bundle_matches) == true ]] || fail "kca_authority bundle differs from kca_cluster.ca_pem"
[[ $(out crl_url) == "$KCA/v1/clusters/$NAME/authorities/operators/crl" ]] || fail "crl_url: $(out crl_url)"
[[ $(curl -sS -o /dev/null -w '%{http_code}' --cacert "$CACERT" "$(out crl_url)") == 200 ]] || fail "crl_url not served"
[[ $(out client_ca_certs) -ge 2 && $(out client_crls) -ge 2 ]] ||
    fail "client bundle: $(out client_ca_certs) certificates, $(out client_crls) CRLs"
ok "data sources: kca_authority bundle = ca_pem[operators], crl_url served; kca_client_bundle has 2 CAs and 2 CRLs"

log "component certificate, authority rotation and cluster endpoints"
COMPONENT1=$(out component_serial)
cert=$(api GET "/v1/clusters/$CLUSTER_ID/certificates/$COMPONENT1")
[[ $(jq -r .status <<<"$cert") == active ]] || fail "component certificate $COMPONENT1 not active: $cert"
out component_certificate >"$WORK/component.pem"
out component_key >"$WORK/component.key"
out component_ca >"$WORK/component-ca.pem"
[[ $(openssl x509 -noout -subject -nameopt RFC2253 -in "$WORK/component.pem") == "subject=CN=kube-etcd-healthcheck-client" ]] ||
    fail "component subject: $(openssl x509 -noout -subject -in "$WORK/component.pem")"
[[ $(openssl x509 -noout -pubkey -in "$WORK/component.pem") == $(openssl pkey -pubout -in "$WORK/component.key") ]] ||
    fail "the component key in the state does not match its certificate"
curl -sSf --cacert "$CACERT" "$KCA/v1/clusters/$NAME/authorities/etcd/ca.pem" >"$WORK/etcd-ca.pem"
cmp -s "$WORK/etcd-ca.pem" "$WORK/component-ca.pem" || fail "component ca_pem differs from kca's etcd ca.pem"
openssl verify -CAfile "$WORK/etcd-ca.pem" -purpose sslclient "$WORK/component.pem" >/dev/null ||
    fail "the component certificate does not verify against the etcd CA as a TLS client"
[[ $(out component_authority) == etcd && $(out component_not_after) == $(jq -r .not_after <<<"$cert") ]] ||
    fail "component authority/not_after: $(out component_authority) $(out component_not_after)"
ok "kca_component_certificate: $COMPONENT1 active in kca, CN kube-etcd-healthcheck-client, key in state matches, verifies (openssl) against kca's etcd ca.pem as a client"

rotation=$(out_json rotation)
kubelet=$(api GET "/v1/clusters/$CLUSTER_ID/authorities/kubelet")
[[ $(jq -r .generation <<<"$rotation") == 2 && $(jq -r .generation <<<"$kubelet") == 2 ]] ||
    fail "kubelet CA not at generation 2: state $rotation, kca $(jq -c '{generation}' <<<"$kubelet")"
[[ $(jq -r .fingerprint <<<"$rotation") == $(jq -r .fingerprint_sha256 <<<"$kubelet") ]] || fail "rotation fingerprint differs from kca's"
[[ $(jq -c '[.generations[] | {generation, state}]' <<<"$kubelet") == *'{"generation":1,"state":"retiring"}'* ]] ||
    fail "generation 1 not retiring: $(jq -c '[.generations[] | {generation, state}]' <<<"$kubelet")"
[[ $(jq -r '"\(.previous_generation) \(.previous_retired)"' <<<"$rotation") == "1 false" ]] || fail "rotation: $rotation"
ok "kca_authority_rotation: kubelet CA at generation 2 in kca (fingerprint as in the state), generation 1 retiring"

endpoints=$(out_json endpoints)
[[ $(jq -c '.ca_pem_urls | keys' <<<"$endpoints") == '["aggregation","control-plane","etcd","kubelet","operators"]' ]] ||
    fail "endpoint kinds: $(jq -c '.ca_pem_urls | keys' <<<"$endpoints")"
[[ $(jq -r '.crl_urls.etcd' <<<"$endpoints") == "$KCA/v1/clusters/$NAME/authorities/etcd/crl" ]] || fail "crl url: $endpoints"
for url in $(jq -r '(.ca_pem_urls, .crl_urls, .crl_pem_urls)[], .client_ca_url, .client_crl_url, .revoked_map_url' <<<"$endpoints"); do
    # public endpoints: no token
    [[ $(curl -sS -o /dev/null -w '%{http_code}' --cacert "$CACERT" "$url") == 200 ]] || fail "not served: $url"
done
curl -sSf --cacert "$CACERT" "$(jq -r .crl_urls.etcd <<<"$endpoints")" | openssl crl -inform DER -noout 2>/dev/null ||
    fail "crl_urls.etcd is not a DER CRL"
[[ $(curl -sSf --cacert "$CACERT" "$(jq -r .client_ca_url <<<"$endpoints")" | grep -c "BEGIN CERTIFICATE") -ge 2 ]] ||
    fail "client_ca_url (kinds operators, control-plane) has fewer than 2 certificates"
ok "kca_cluster_endpoints: 5 kinds x 3 URLs + client-ca, client-crl, revoked.map all served without a token (200); etcd CRL is DER"

log "a second plan shows no changes"
expect_plan 0 "second plan"
ok "terraform plan -detailed-exitcode = 0 after apply"
KCA_CACERT=$(cat "$CACERT") expect_plan 0 "plan with KCA_CACERT as PEM text"
ok "KCA_CACERT accepted as PEM text as well as a path"

log "changing groups replaces the kubeconfig and revokes the old certificate"
vars '["dev","ops"]' 600 "$SERVER"
expect_plan 2 "plan after changing groups"
grep -q "kca_kubeconfig.alice must be replaced" "$LAST_LOG" || { cat "$LAST_LOG" >&2; fail "plan does not replace the kubeconfig"; }
tf_ok apply -input=false -auto-approve
SERIAL2=$(out serial)
[[ "$SERIAL2" != "$SERIAL1" ]] || fail "serial unchanged after changing groups"
[[ $(api GET "/v1/clusters/$CLUSTER_ID/certificates/$SERIAL1" | jq -r .status) == revoked ]] ||
    fail "old certificate $SERIAL1 not revoked"
[[ $(api GET "/v1/clusters/$CLUSTER_ID/certificates/$SERIAL1" | jq -r .revocation_reason) == cessationOfOperation ]] ||
    fail "old certificate not revoked with reason cessationOfOperation"
cert=$(api GET "/v1/clusters/$CLUSTER_ID/certificates/$SERIAL2")
[[ $(jq -r .status <<<"$cert") == active && $(jq -c .groups <<<"$cert") == '["dev","ops"]' ]] ||
    fail "new certificate $SERIAL2: $cert"
ok "groups change: new certificate $SERIAL2 (O dev,ops) active, old $SERIAL1 revoked (cessationOfOperation)"
expect_plan 0 "plan after replacement"
ok "plan after the replacement shows no changes"

log "retire_previous, triggers and a component input change"
rotation_vars 1 true 86400
expect_plan 2 "plan after setting retire_previous"
grep -q "kca_authority_rotation.kubelet will be updated in-place" "$LAST_LOG" || { cat "$LAST_LOG" >&2; fail "retire_previous is not an in-place update"; }
tf_ok apply -input=false -auto-approve
kubelet=$(api GET "/v1/clusters/$CLUSTER_ID/authorities/kubelet")
[[ $(jq -c '[.generations[].generation]' <<<"$kubelet") == '[2]' && $(out_json rotation | jq -r .previous_retired) == true ]] ||
    fail "generation 1 not retired: $(jq -c '[.generations[] | {generation, state}]' <<<"$kubelet")"
expect_plan 0 "plan after retiring"
ok "retire_previous = true: in-place update retired generation 1 (kca lists only generation 2); plan clean"
rotation_vars 2 true 86400
expect_plan 2 "plan after changing triggers"
grep -q "kca_authority_rotation.kubelet must be replaced" "$LAST_LOG" || { cat "$LAST_LOG" >&2; fail "triggers do not rotate again"; }
tf_ok apply -input=false -auto-approve
kubelet=$(api GET "/v1/clusters/$CLUSTER_ID/authorities/kubelet")
[[ $(jq -r .generation <<<"$kubelet") == 3 && $(jq -c '[.generations[].generation]' <<<"$kubelet") == '[3]' ]] ||
    fail "after the second rotation: $(jq -c '{generation, g: [.generations[].generation]}' <<<"$kubelet")"
[[ $(out_json rotation | jq -c '[.generation, .previous_generation, .previous_retired]') == '[3,2,true]' ]] ||
    fail "rotation state: $(out_json rotation)"
[[ $(cd "$TF" && "$TERRAFORM" output -no-color -json 2>/dev/null | jq -r .operators_fingerprint.value) == $(api GET "/v1/clusters/$CLUSTER_ID/authorities/operators" | jq -r .fingerprint_sha256) ]] ||
    fail "rotating kubelet touched the operators CA"
expect_plan 0 "plan after the second rotation"
ok "triggers change: rotated again (generation 3 signs, generation 2 retired at once); plan clean"
rotation_vars 2 true 43200
expect_plan 2 "plan after changing the component ttl"
grep -q "kca_component_certificate.etcd_health must be replaced" "$LAST_LOG" || { cat "$LAST_LOG" >&2; fail "ttl change does not replace"; }
tf_ok apply -input=false -auto-approve
COMPONENT2=$(out component_serial)
[[ "$COMPONENT2" != "$COMPONENT1" && $(api GET "/v1/clusters/$CLUSTER_ID/certificates/$COMPONENT2" | jq -r .status) == active ]] ||
    fail "no new active component certificate"
old=$(api GET "/v1/clusters/$CLUSTER_ID/certificates/$COMPONENT1")
[[ $(jq -r '"\(.status) \(.revocation_reason)"' <<<"$old") == "revoked cessationOfOperation" ]] || fail "old component certificate: $old"
crl=$(curl -sSf --cacert "$CACERT" "$KCA/v1/clusters/$NAME/authorities/etcd/crl.pem" | openssl crl -noout -text)
grep -qi "Serial Number: 0*$(sed 's/^0*//' <<<"$COMPONENT1")\$" <<<"$crl" || fail "$COMPONENT1 not in the etcd CRL"
expect_plan 0 "plan after the component replacement"
ok "component ttl change: new certificate $COMPONENT2, old $COMPONENT1 revoked (cessationOfOperation) and in the etcd CRL; plan clean"

log "out-of-band changes show as drift"
api PATCH "/v1/clusters/$CLUSTER_ID" '{"labels": {"env": "drifted", "extra": "x"}}' >/dev/null
expect_plan 2 "plan after an out-of-band label change"
grep -q '"drifted"' "$LAST_LOG" || { cat "$LAST_LOG" >&2; fail "label drift not shown"; }
ok "out-of-band PATCH of labels: plan exit code 2, drift shown"
api PATCH "/v1/clusters/$CLUSTER_ID" '{"server": "https://elsewhere.acc.test:6443"}' >/dev/null
expect_plan 2 "plan after an out-of-band server change"
grep -q 'elsewhere.acc.test' "$LAST_LOG" || { cat "$LAST_LOG" >&2; fail "server drift not shown"; }
grep -q 'kca_cluster.main will be updated in-place' "$LAST_LOG" || { cat "$LAST_LOG" >&2; fail "not an in-place update"; }
ok "out-of-band PATCH of server: plan exit code 2, in-place update"
tf_ok apply -input=false -auto-approve
cluster=$(api GET "/v1/clusters/$CLUSTER_ID")
[[ $(jq -c .labels <<<"$cluster") == '{"env":"test"}' && $(jq -r .server <<<"$cluster") == "$SERVER" ]] ||
    fail "apply did not restore labels/server: $(jq -c '{labels, server}' <<<"$cluster")"
[[ $(out serial) == "$SERIAL2" ]] || fail "the kubeconfig was replaced by a cluster update"
expect_plan 0 "plan after correcting drift"
ok "apply restored labels and server with PATCH (same cluster id, same kubeconfig); plan clean"
vars '["dev","ops"]' 600 "https://moved.acc.test:6443"
tf_ok apply -input=false -auto-approve
[[ $(api GET "/v1/clusters/$CLUSTER_ID" | jq -r .server) == "https://moved.acc.test:6443" ]] || fail "server update"
[[ $(out cluster_id) == "$CLUSTER_ID" ]] || fail "server change replaced the cluster"
SERVER="https://moved.acc.test:6443"
ok "a server change in the configuration updates the cluster in place"

log "a certificate revoked or due for renewal is replaced"
api POST "/v1/clusters/$CLUSTER_ID/certificates/$SERIAL2/revoke" '{"reason": "keyCompromise"}' >/dev/null
expect_plan 2 "plan after an out-of-band revocation"
grep -q "kca_kubeconfig.alice must be replaced" "$LAST_LOG" || { cat "$LAST_LOG" >&2; fail "revoked kubeconfig not replaced"; }
tf_ok apply -input=false -auto-approve
SERIAL3=$(out serial)
[[ "$SERIAL3" != "$SERIAL2" && $(api GET "/v1/clusters/$CLUSTER_ID/certificates/$SERIAL3" | jq -r .status) == active ]] ||
    fail "no new active certificate after revocation"
ok "revoked in kca (curl): plan replaces, apply issues $SERIAL3"
vars '["dev","ops"]' 8000 "$SERVER" # ttl 7200 s: now >= not_after - 8000 s
expect_plan 2 "plan inside the early-renewal window"
grep -q "kca_kubeconfig.alice must be replaced" "$LAST_LOG" || { cat "$LAST_LOG" >&2; fail "renewal window: no replacement"; }
vars '["dev","ops"]' 600 "$SERVER"
expect_plan 0 "plan outside the early-renewal window"
ok "early_renewal_seconds: replacement planned inside the window (early_renewal_seconds 8000 > ttl 7200), none outside"

log "import of a cluster created with curl"
imported=$(api POST /v1/clusters "{\"name\": \"$IMPORTED\", \"server\": \"https://imp.acc.test:6443\", \"labels\": {\"team\": \"imp\"}}")
IMPORTED_ID=$(jq -r .id <<<"$imported")
cat >"$TF/imported.tf" <<EOF
resource "kca_cluster" "imported" {
  name   = "$IMPORTED"
  server = "https://imp.acc.test:6443"
  labels = { team = "imp" }
}
EOF
tf_ok import -input=false kca_cluster.imported "$IMPORTED_ID"
expect_plan 0 "plan after import by id"
ok "terraform import by id ($IMPORTED_ID): plan shows no changes"
tf_ok state rm kca_cluster.imported
tf_ok import -input=false kca_cluster.imported "$IMPORTED"
[[ $(cd "$TF" && "$TERRAFORM" state show -no-color kca_cluster.imported 2>/dev/null | grep -E '^\s+id\s+=' | tr -d ' "' ) == "id=$IMPORTED_ID" ]] ||
    fail "import by name did not store the id"
expect_plan 0 "plan after import by name"
ok "terraform import by name ($IMPORTED): state id is the uuid, plan shows no changes"
api DELETE "/v1/clusters/$IMPORTED_ID" >/dev/null
expect_plan 2 "plan after the imported cluster was deleted in kca"
grep -q "kca_cluster.imported will be created" "$LAST_LOG" || { cat "$LAST_LOG" >&2; fail "deleted cluster not re-created"; }
ok "cluster deleted with curl: read drops it (404), plan creates it again"
tf_ok apply -input=false -auto-approve
[[ $(api_status GET "/v1/clusters/$IMPORTED") == 200 ]] || fail "imported cluster not re-created"

log "destroy leaves nothing behind"
tf_ok destroy -input=false -auto-approve
names=$(api GET "/v1/clusters?limit=500" | jq -r '.items[].name')
grep -qx -e "$NAME" -e "$IMPORTED" <<<"$names" && fail "test clusters still listed: $names"
[[ $(api_status GET "/v1/clusters/$CLUSTER_ID") == 404 ]] || fail "cluster $CLUSTER_ID still readable"
audit=$(api GET "/v1/audit?limit=500")
revoke_id=$(jq -r --arg s "$SERIAL3" '[.items[] | select(.action=="certificate.revoke" and .object_id==$s)][0].id // empty' <<<"$audit")
delete_id=$(jq -r --arg c "$CLUSTER_ID" '[.items[] | select(.action=="cluster.delete" and .object_id==$c)][0].id // empty' <<<"$audit")
[[ -n "$revoke_id" ]] || fail "no certificate.revoke of $SERIAL3 in the audit trail"
jq -e --arg s "$BOB" 'any(.items[]; .action=="certificate.revoke" and .object_id==$s)' <<<"$audit" >/dev/null ||
    fail "bob's certificate $BOB not revoked on destroy"
jq -e --arg s "$COMPONENT2" 'any(.items[]; .action=="certificate.revoke" and .object_id==$s)' <<<"$audit" >/dev/null ||
    fail "component certificate $COMPONENT2 not revoked on destroy"
[[ -n "$delete_id" && "$revoke_id" -lt "$delete_id" ]] || fail "certificate not revoked before the cluster was deleted"
reason=$(jq -r --arg s "$SERIAL3" '[.items[] | select(.action=="certificate.revoke" and .object_id==$s)][0].details.reason' <<<"$audit")
[[ "$reason" == cessationOfOperation ]] || fail "destroy revoked with reason $reason"
[[ -z $(cd "$TF" && "$TERRAFORM" state list 2>/dev/null) ]] || fail "state not empty after destroy"
ok "destroy: no test cluster listed in kca, certificates $SERIAL3, $BOB and $COMPONENT2 revoked (cessationOfOperation, audit) before the cluster was deleted, state empty"

grep -qF "$TOKEN" "$WORK"/tf-*.log "$WORK/kca.log" && fail "the token appears in a log"
ok "the token appears in no terraform or kca log"

echo
echo "PASS: $PASSED checks in $(($(date +%s) - STARTED))s"
echo "$PASSED passed, 0 failed"
