#!/usr/bin/env bash
# The project's one test command: `scripts/test.sh` (CI runs it through .ci/run with CI=true).
#
#   1. installs the Debian packages the tests need (APT_PACKAGES below; skipped when present),
#   2. builds the Go reference implementation (target/tools/esgz-oracle) and exports ESGZ_ORACLE,
#   3. starts the services the tests need (start_services below; none yet),
#   4. runs, stopping at the first failing phase: rustfmt, clippy -D warnings, the fuzz crate's
#      `cargo check`, the release binaries the demo test runs, every test of the workspace
#      (nextest when installed) and the doc tests.
#
# Works as root on a fresh Debian 12 machine, and by hand as any user: without root, missing
# packages are reported and skipped, and tests that need them skip (or, with CI=true, fail).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

# --------------------------------------------------------------------------------------------
# What the tests need. Add Debian packages here, with a comment saying which tests use them.
APT_PACKAGES=(
    # the Go oracle, tools/esgz-oracle/build.sh (estargz v0.12.0 as packaged by Debian)
    golang-go
    golang-github-containerd-stargz-snapshotter-dev
    golang-github-klauspost-compress-dev
    golang-github-opencontainers-go-digest-dev
    golang-github-vbatts-tar-split-dev
    golang-golang-x-sync-dev
    # tar tooling used to cross-check inputs and outputs
    tar
    gzip
    zstd
    pigz
    # testkit regenerates random.tar with tools/esgz-oracle/gen_inputs.py
    python3
    # estargz-snapshotter/tests (containerd_e2e, remote_e2e): real containerd 1.6 + runc, a
    # registry, busybox for the test images, FUSE, and ctr-remote (rpull with remote labels)
    containerd
    runc
    docker-registry
    busybox-static
    fuse3
    stargz-snapshotter
    # estargz-io/tests/registry.rs: htpasswd (apache2-utils) for the basic-auth registry, the
    # token server's JWT signing (python3-cryptography), skopeo for interop pushes
    apache2-utils
    python3-cryptography
    skopeo
)

# Services the tests need (containerd, a registry, ...): start them here, and register how to
# stop them with `on_exit "command"`; they are stopped in reverse order when the script ends.
start_services() {
    :
}
# --------------------------------------------------------------------------------------------

ORACLE="$ROOT/target/tools/esgz-oracle"
LOG_DIR="$ROOT/target/test-logs"
CI=${CI:-}

# ---- phases and timings
PHASE=""
PHASE_START=0
TIMINGS=()
SCRIPT_START=$(date +%s%N)
EXIT_ACTIONS=()

ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
fmt_ms() { printf '%d.%01ds' $(($1 / 1000)) $((($1 % 1000) / 100)); }

end_phase() {
    if [[ -n $PHASE ]]; then
        TIMINGS+=("$(printf '  %-40s %9s' "$PHASE" "$(fmt_ms "$(ms_since "$PHASE_START")")")")
        PHASE=""
    fi
}

phase() {
    end_phase
    PHASE=$1
    PHASE_START=$(date +%s%N)
    printf '\n==== %s ====\n' "$PHASE"
}

print_timings() {
    printf '\n==== timings ====\n'
    if ((${#TIMINGS[@]})); then
        printf '%s\n' "${TIMINGS[@]}"
    fi
    printf '  %-40s %9s\n' "total" "$(fmt_ms "$(ms_since "$SCRIPT_START")")"
}

on_exit() { EXIT_ACTIONS+=("$1"); }

finish() {
    local status=$?
    local failed_phase=$PHASE
    trap - EXIT
    end_phase
    local i
    for ((i = ${#EXIT_ACTIONS[@]} - 1; i >= 0; i--)); do
        eval "${EXIT_ACTIONS[i]}" || true
    done
    if ((status != 0)); then
        print_timings
        printf '\nscripts/test.sh: FAILED (exit %d) in phase: %s\n' "$status" "${failed_phase:-setup}"
    fi
    exit "$status"
}
trap finish EXIT
mkdir -p "$LOG_DIR"

warn() { printf 'WARNING: %s\n' "$*" >&2; }

retry() {
    local tries=$1 n=1
    shift
    until "$@"; do
        if ((n >= tries)); then
            return 1
        fi
        warn "attempt $n of '$*' failed; retrying in $((n * 5))s"
        sleep $((n * 5))
        n=$((n + 1))
    done
}

is_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == ii* ]]
}

# --------------------------------------------------------------------------------------------
phase "system packages"
if ! command -v dpkg-query >/dev/null; then
    warn "not a Debian system (no dpkg-query): install by hand: ${APT_PACKAGES[*]}"
else
    missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        echo "all ${#APT_PACKAGES[@]} packages already installed"
    elif [[ $(id -u) == 0 ]]; then
        echo "installing: ${missing[*]} (log: target/test-logs/apt.log)"
        export DEBIAN_FRONTEND=noninteractive
        if ! { retry 3 apt-get update -q && retry 3 apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$LOG_DIR/apt.log" 2>&1; then
            tail -n 30 "$LOG_DIR/apt.log" >&2
            exit 1
        fi
    else
        warn "not root: cannot install ${missing[*]}; tests that need them will skip (fail under CI)"
    fi
fi

# --------------------------------------------------------------------------------------------
phase "Go oracle (target/tools/esgz-oracle)"
oracle_is_current() {
    [[ -x $ORACLE ]] &&
        [[ -z $(find tools/esgz-oracle -type f -newer "$ORACLE" -print -quit) ]] &&
        "$ORACLE" version >/dev/null 2>&1
}
if oracle_is_current; then
    echo "up to date: $("$ORACLE" version)"
elif command -v go >/dev/null && is_installed golang-github-containerd-stargz-snapshotter-dev; then
    mkdir -p target/tools
    sh tools/esgz-oracle/build.sh "$ROOT/target/tools"
else
    warn "Go or the estargz Go packages are missing: the oracle is not built"
fi
if [[ -x $ORACLE ]]; then
    export ESGZ_ORACLE="$ORACLE"
    echo "ESGZ_ORACLE=$ESGZ_ORACLE"
elif [[ $CI == true ]]; then
    echo "CI=true and the oracle could not be built" >&2
    exit 1
fi

# --------------------------------------------------------------------------------------------
phase "services"
start_services

# --------------------------------------------------------------------------------------------
if [[ $CI == true ]]; then
    # A fresh clone builds once: incremental compilation only costs time and disk there.
    export CARGO_INCREMENTAL=0
fi

phase "cargo fmt --check"
cargo fmt --all -- --check

phase "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

if [[ -f fuzz/Cargo.toml ]]; then
    # A separate workspace (cargo-fuzz layout); libfuzzer-sys checks on stable.
    phase "cargo check (fuzz)"
    cargo check --manifest-path fuzz/Cargo.toml --all-targets
fi

# The demo test (examples/tests/demo_run.rs) runs scripts/demo.sh, which uses release builds.
# Building them here keeps a several-minute release compile from running beside the tests.
phase "cargo build --release (the demo's binaries)"
cargo build --release --quiet -p estargz-snapshotter
cargo build --release --quiet -p estargz-examples --bin serve_blob --bin lazy_read

summary_nextest=""
if cargo nextest --version >/dev/null 2>&1; then
    phase "cargo nextest run --workspace"
    cargo nextest run --workspace --no-fail-fast 2>&1 | tee "$LOG_DIR/nextest.log"
    summary_nextest=$(sed -E 's/\x1b\[[0-9;]*m//g' "$LOG_DIR/nextest.log" |
        grep -E '^ *Summary \[' | tail -n 1 | sed -E 's/^ +//' || true)
else
    phase "cargo test --workspace"
    cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$LOG_DIR/cargo-test.log"
fi

phase "cargo test --workspace --doc"
cargo test --workspace --doc 2>&1 | tee "$LOG_DIR/doctest.log"
end_phase

# --------------------------------------------------------------------------------------------
# Totals: nextest's summary line (or cargo test's result lines) plus the doc tests'.
sum_results() { # sums "test result: ... N passed; M failed; K ignored" lines of a log
    sed -E 's/\x1b\[[0-9;]*m//g' "$1" | grep -E '^test result: ' |
        sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/' |
        awk '{p += $1; f += $2; i += $3} END {printf "%d %d %d\n", p, f, i}'
}
read -r doc_passed doc_failed doc_ignored < <(sum_results "$LOG_DIR/doctest.log")
if [[ -n $summary_nextest ]]; then
    unit_passed=$(grep -oE '[0-9]+ passed' <<<"$summary_nextest" | grep -oE '[0-9]+' || echo 0)
    unit_failed=$(grep -oE '[0-9]+ failed' <<<"$summary_nextest" | grep -oE '[0-9]+' || echo 0)
    unit_skipped=$(grep -oE '[0-9]+ skipped' <<<"$summary_nextest" | grep -oE '[0-9]+' || echo 0)
else
    read -r unit_passed unit_failed unit_skipped < <(sum_results "$LOG_DIR/cargo-test.log")
    summary_nextest="cargo test: $unit_passed passed; $unit_failed failed; $unit_skipped ignored"
fi

print_timings
printf '\n==== result ====\n'
printf 'tests:     %s\n' "$summary_nextest"
printf 'doc tests: %d passed; %d failed; %d ignored\n' "$doc_passed" "$doc_failed" "$doc_ignored"
printf 'all: %d passed, %d failed, %d skipped\n' \
    $((unit_passed + doc_passed)) $((unit_failed + doc_failed)) $((unit_skipped + doc_ignored))
