# shellcheck shell=bash
# Build environment shared by the scripts: one target directory outside the clone (so a
# fresh clone on the same machine reuses the dependency builds), and the tools we need.

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${HOME:-/root}/.cache/pisgate/target}
mkdir -p "$CARGO_TARGET_DIR"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "cargo-nextest is missing; installing it from crates.io" >&2
    cargo install cargo-nextest --locked >&2
fi

# The debug binary the scripts run: $PISGATE_BIN when given (scripts/test.sh gives the one it
# built together with the test binaries: building the binary alone resolves the
# dependencies' features without the tests' and compiles much of the graph again), else
# built here. Prints its path; cargo's output goes to stderr.
pisgate_debug_bin() {
    if [ -n "${PISGATE_BIN:-}" ]; then
        echo "$PISGATE_BIN"
        return 0
    fi
    cargo build --locked "$@" --bin pisgate >&2
    echo "$CARGO_TARGET_DIR/debug/pisgate"
}
