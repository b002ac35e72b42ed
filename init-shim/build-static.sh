#!/bin/sh
# Builds bottleneck-init as a small static binary and prints the path of the result.
#
#   init-shim/build-static.sh
#   CARGO_TARGET_DIR=/tmp/t init-shim/build-static.sh
#
# * Static glibc (crt-static). The explicit --target is required: without it RUSTFLAGS
#   also reaches proc-macro crates, which cannot be built static (see CRATES.md).
# * Size: the release profile is tuned here, for this build only, through cargo's
#   CARGO_PROFILE_RELEASE_* variables (opt-level z, fat LTO, one codegen unit,
#   panic=abort: a panicking PID 1 ends the container either way, and symbols stripped).
#   Any of them can be overridden from the environment.
set -eu
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
export CARGO_PROFILE_RELEASE_OPT_LEVEL="${CARGO_PROFILE_RELEASE_OPT_LEVEL:-z}"
export CARGO_PROFILE_RELEASE_LTO="${CARGO_PROFILE_RELEASE_LTO:-fat}"
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS="${CARGO_PROFILE_RELEASE_CODEGEN_UNITS:-1}"
export CARGO_PROFILE_RELEASE_PANIC="${CARGO_PROFILE_RELEASE_PANIC:-abort}"
export CARGO_PROFILE_RELEASE_STRIP="${CARGO_PROFILE_RELEASE_STRIP:-symbols}"
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release -p bottleneck-init --target "$target" >&2
echo "${CARGO_TARGET_DIR:-target}/$target/release/bottleneck-init"
