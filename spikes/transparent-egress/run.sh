#!/bin/sh
# Spike 2 on Linux: transparent egress through the sidecar (../../../shared/seeds/003_*),
# with podman or docker and this project's binaries: bottleneck-gateway in place of
# mitmproxy + iptables + dnsmasq, bottleneck-init in place of `ip route replace` with
# CAP_NET_ADMIN left in the agent, `bottleneck run` in place of the hand-made containers.
# Both networks are internal; the "internet" is a wan container (launcher/examples/wan.rs).
#
#   spikes/transparent-egress/run.sh podman|docker       (root; builds the workspace)
engine=${1:-podman}
spike=transparent
. "$(dirname "$0")/../common.sh"
images_cleanup() { $engine rmi -f bn-spike-agent:latest bn-spike-gateway:latest >/dev/null 2>&1 || true; }
trap 'images_cleanup; spike_exit; rm -rf "${work:-/nonexistent}"' EXIT
spike_cleanup
build_wan
(cd "$repo" && cargo build -q -p bottleneck -p bottleneck-gateway -p bottleneck-init)
bin=$target/debug
work=$(mktemp -d /tmp/bn-spike-te.XXXXXX)

say "images from images/ on the local base ($base)"
for b in bottleneck-init bottleneck-gateway; do objcopy --strip-debug "$bin/$b" "$work/$b"; done
cp "$repo/images/bottleneck-gateway-entry" "$work/"
show $engine build -q -f "$repo/images/Containerfile.agent" --build-arg "BASE=$base" -t bn-spike-agent:latest "$work"
show $engine build -q -f "$repo/images/Containerfile.gateway" --build-arg "BASE=$base" -t bn-spike-gateway:latest "$work"

say "the simulated internet: an internal network with the wan container"
show $engine network create --internal --subnet "$wan_net.0/24" --label "$label" bn-spike-te-wan
start_wan bn-spike-te-wan

cat >"$work/policy.yaml" <<POLICY
version: 1
routes:
  - host: allowed.test
    auth: {scheme: Bearer, token_ref: SPIKE_TOKEN}
dns:
  upstream: [$wan_net.10]
allow_ranges: [$wan_net.0/24]
POLICY
show cat "$work/policy.yaml"

cat >"$work/agent.sh" <<'AGENT'
GW=$(ip route | sed -n 's/^default via \([0-9.]*\).*/\1/p')
echo "proxy variables: $(env | grep -ci _proxy) set"
ip -o -4 addr show | grep -v " lo "; ip route; cat /etc/resolv.conf
grep -E '^Cap(Eff|Bnd)' /proc/self/status; id
for url in http://allowed.test/plain https://allowed.test/tls https://denied.test/nope; do
  printf '%s -> ' "$url"; curl -sS -m 8 "$url" 2>&1 | head -n 3
done
printf 'https://denied.test forced to the wan address -> '
curl -sS -m 8 -D - -o /dev/null --resolve "denied.test:443:$WAN" https://denied.test/forced 2>&1 | grep -Ei '^(HTTP|x-bottleneck)'
printf 'direct IP https://%s -> ' "$WAN"; curl -sS -m 8 -k "https://$WAN/direct" 2>&1
printf 'ip route replace default via the host side -> '; ip route replace default via "${GW%.*}.1" dev eth0 2>&1
echo probes-done
sleep 4
AGENT
chmod 755 "$work"; chmod 644 "$work/agent.sh"

say "bottleneck run --backend $engine --egress=transparent (the agent's output first, the launcher's progress on stderr)"
SPIKE_TOKEN=spike-secret-value "$bin/bottleneck" run --backend "$engine" --name spike \
  --image bn-spike-agent:latest --gateway-image bn-spike-gateway:latest \
  --egress-network bn-spike-te-wan --upstream-ca "$outdir/wan-ca.pem" --policy "$work/policy.yaml" \
  -e "WAN=$wan_net.10" -v "$work/agent.sh:/spike/agent.sh:ro" \
  -- sh /spike/agent.sh </dev/null >"$work/agent.out" 2>"$work/launcher.err" &
pid=$!
for _ in $(seq 300); do grep -q probes-done "$work/agent.out" 2>/dev/null && break; sleep 0.2; done
sed 's/^/  /' "$work/agent.out"
say "bottleneck logs spike (the audit log, while the bottle runs)"
"$bin/bottleneck" logs spike 2>&1 | sed 's/^/  /'
wait $pid && status=0 || status=$?
say "launcher (exit $status)"
sed 's/^/  /' "$work/launcher.err"
say "what reached the wan"
show $engine logs bn-spike-transparent-wan
say "left behind"
show sh -c "$engine ps -a --filter label=bottleneck.bottle=spike -q; $engine network ls --filter label=bottleneck.bottle=spike -q; ls /run/bottleneck/spike 2>&1"
