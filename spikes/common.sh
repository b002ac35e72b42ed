# Shared by the spike scripts: engine selection, the local base image, a wan container.
# Sourced; expects $engine (podman|docker) and $spike (a short name).
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
case "$engine" in
  podman)
    # This machine kind: runc, cgroupfs, explicit ulimits (../shared/CRATES.md).
    conf=$(mktemp /tmp/bn-spike-containers.XXXXXX.conf)
    printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n' >"$conf"
    export CONTAINERS_CONF=$conf
    base=localhost/bottleneck-base:bookworm
    wan_net=203.0.113 ;;
  docker)
    base=bottleneck-base:bookworm
    wan_net=198.51.100 ;;
  *) echo "usage: $0 podman|docker" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "$0: run as root" >&2; exit 2; }
label="bottleneck.spike=$spike"

say() { printf '\n### %s\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@" 2>&1 | sed 's/^/  /'; }

# Remove everything labelled for this spike (containers first).
spike_cleanup() {
  ids=$($engine ps -a -q --filter "label=$label" 2>/dev/null || true)
  [ -z "$ids" ] || { $engine kill $ids >/dev/null 2>&1; $engine rm -f $ids >/dev/null 2>&1; } || true
  nets=$($engine network ls -q --filter "label=$label" 2>/dev/null || true)
  [ -z "$nets" ] || $engine network rm $nets >/dev/null 2>&1 || true
}

# At exit: the spike's containers and networks, the engine settings, the wan's output.
spike_exit() {
  spike_cleanup
  [ -z "${conf:-}" ] || rm -f "$conf"
  [ -z "${outdir:-}" ] || rm -rf "$outdir"
}

# The cached base image (debootstrap once per machine).
"$repo/images/base-image.sh" "$engine" bottleneck-base:bookworm >/dev/null

# The simulated internet's server (DNS, HTTP, HTTPS; launcher/examples/wan.rs).
build_wan() {
  (cd "$repo" && cargo build -q -p bottleneck --example wan)
  target=$(cd "$repo" && cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  wan_bin=$target/debug/examples/wan
  [ -x "$wan_bin" ] || { echo "wan example not built" >&2; exit 1; }
  outdir=$(mktemp -d /tmp/bn-spike-out.XXXXXX)
}

# start_wan NETWORK: the wan container at .10 of $wan_net on NETWORK.
start_wan() {
  $engine run -d --name "bn-spike-$spike-wan" --label "$label" --network "$1" --ip "$wan_net.10" \
    -v "$wan_bin:/wan:ro" -v "$outdir:/out" --entrypoint /wan "$base" \
    --ip "$wan_net.10" --names allowed.test,denied.test --ca-out /out/wan-ca.pem >/dev/null
  for _ in $(seq 50); do [ -s "$outdir/wan-ca.pem" ] && return 0; sleep 0.2; done
  echo "the wan did not start:" >&2; $engine logs "bn-spike-$spike-wan" >&2; exit 1
}
