#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a bounded time each and reports one line per target.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
#
# JOBDOCK_FUZZ_JOBS targets run side by side (default: the number of CPUs). Each target keeps its
# corpus in fuzz/corpus/<target> (not committed) and starts from the seeds in fuzz/seeds/<target>.
# Full logs go to fuzz/logs/<target>.log; a crash leaves its input in fuzz/artifacts/<target>/ and
# makes the script exit 1. Turn each crash into a regression test in the parser's unit tests.
# Needs the nightly toolchain (libFuzzer's instrumentation); installs cargo-fuzz if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 1)); then
    echo "scripts/fuzz.sh: SECONDS_PER_TARGET must be a positive integer, not ${seconds@Q}" >&2
    exit 2
fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: installing the nightly toolchain" >&2
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked --quiet
fi

mapfile -t all < <(cd fuzz && cargo +nightly fuzz list)
targets=("$@")
((${#targets[@]})) || targets=("${all[@]}")
for t in "${targets[@]}"; do
    if ! printf '%s\n' "${all[@]}" | grep -qx -- "$t"; then
        echo "scripts/fuzz.sh: no fuzz target ${t@Q} (have: ${all[*]})" >&2
        exit 2
    fi
done

echo "== fuzz: building ${#targets[@]} targets (nightly, AddressSanitizer)"
(cd fuzz && cargo +nightly fuzz build --release)

mkdir -p fuzz/logs
run_one() {
    local t=$1
    mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t" "fuzz/artifacts/$t"
    # -timeout: an input that takes a second is a hang worth reporting, as is a 2 GiB RSS.
    (cd fuzz && cargo +nightly fuzz run --release "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
        -print_final_stats=1) >"fuzz/logs/$t.log" 2>&1
}

jobs=${JOBDOCK_FUZZ_JOBS:-$(nproc)}
declare -A pid_of
failed=()
for t in "${targets[@]}"; do
    while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done
    run_one "$t" &
    pid_of[$t]=$!
done
for t in "${targets[@]}"; do
    if ! wait "${pid_of[$t]}"; then failed+=("$t"); fi
done

printf '%-16s %12s %10s %8s  %s\n' target runs exec/s cov result
for t in "${targets[@]}"; do
    log=fuzz/logs/$t.log
    runs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$log" | tail -1)
    rate=$(awk '/stat::average_exec_per_sec:/ {print $2}' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    result=ok
    if printf '%s\n' "${failed[@]}" | grep -qx -- "$t"; then
        result="FAILED: $(grep -m1 -o 'panicked at.*\|ERROR: .*' "$log" || echo "see $log")"
    fi
    printf '%-16s %12s %10s %8s  %s\n' "$t" "${runs:-?}" "${rate:-?}" "${cov:-?}" "$result"
done
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, ${#failed[@]} failed (logs: fuzz/logs/)"
((${#failed[@]} == 0))
