#!/usr/bin/env bash
# The whole test suite, as CI runs it: brings up the test beds (dockerd, a local registry, test
# images and users; a one-node Slurm cluster; a second dockerd behind the authorization plugin),
# then format, lint, every test, and every fuzz target for a short while. The LSF and Slurm tests
# install the jobdock under test as its Debian package (scripts/build-deb.sh, then dpkg -i:
# setuid root in /usr/bin), as a site would. Run as root on a Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "scripts/test.sh: run as root (the test bed installs packages and starts dockerd)" >&2
    exit 1
fi

bash scripts/testbed.sh up
# The release jobdock, installed as a site installs it (its Debian package) before its Slurm
# nodes run jobs: the Slurm
# test bed's own checks run jobs through it (its epilog and the plugin call it), and an older
# jobdock left on this machine would refuse the test bed's newer config. The LSF and Slurm
# suites install it again, as sites do. Then the SPANK plugin, which the Slurm test bed installs:
# the release build sites install, and the test build whose --jobdock-test-panic proves a panic
# never takes slurmstepd down.
echo "== cargo build --release (and the SPANK plugin, with its test-hooks build); install"
cargo build --release --quiet
cargo build --release --quiet -p jobdock-spank
cargo build --release --quiet -p jobdock-spank --features test-hooks --target-dir target/spank-test-hooks
install_log=/var/log/jobdock-testbed/install.log
# --force-confold: the test bed's /etc/jobdock/wrapper.toml is the site's, kept without a question.
{ deb=$(bash scripts/build-deb.sh) && dpkg -i --force-confdef --force-confold "$deb" </dev/null; } \
    >"$install_log" 2>&1 \
    || { tail -20 "$install_log"; echo "scripts/test.sh: building or installing the package failed" >&2; exit 1; }
bash scripts/slurm-testbed.sh up

echo "== cargo fmt --all --check"
cargo fmt --all --check
echo "== cargo clippy --workspace --all-targets -- -D warnings (and the plugin's test-hooks build)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo clippy -p jobdock-spank --features test-hooks --all-targets --quiet -- -D warnings
# The authorization plugin's bed: a second dockerd of its own behind `jobdock authz` (the authz
# tests restart the plugin from the binary under test).
bash scripts/authz-testbed.sh up target/release/jobdock
echo "== cargo test"
# The integration tests must not skip: their prerequisites come from the test bed above, and
# with CI set a missing one fails its test.
export CI=true
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# The unit tests that need root are #[ignore = "needs root..."] (a developer's plain `cargo test`
# reports them ignored, never passed); as root, here, they all run.
cargo test --workspace --all-targets --no-fail-fast -- --include-ignored 2>&1 | tee "$log" || status=$?

# The fuzz targets for every parser, briefly (scripts/fuzz.sh runs them for as long as asked):
# a crash fails the suite and leaves its input in fuzz/artifacts/.
fuzz_seconds=${JOBDOCK_FUZZ_SECONDS:-15}
echo "== fuzz: every target for ${fuzz_seconds}s"
fuzz=ok
bash scripts/fuzz.sh "$fuzz_seconds" || { status=1; fuzz=FAILED; }

# One closing line for the whole run (cargo's last line is that of a target with no tests).
awk -v fuzz="$fuzz" '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "jobdock: %d passed, %d failed; fuzz %s\n", p, f, fuzz }' "$log"
exit "$status"
