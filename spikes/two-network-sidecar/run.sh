#!/bin/sh
# Spike 1 on Linux: the two-network sidecar shape of the Apple Container spike
# (../../../shared/seeds/004_*), with podman or docker. Nothing leaves the machine: the
# "internet" is a wan container (launcher/examples/wan.rs) on the egress network, and
# only its address is ever contacted; the agent's resolver is never queried.
#
#   spikes/two-network-sidecar/run.sh podman|docker      (root)
engine=${1:-podman}
spike=sidecar
. "$(dirname "$0")/../common.sh"
trap spike_exit EXIT
spike_cleanup
build_wan
agent_net=bn-spike-sidecar-agent
egress_net=bn-spike-sidecar-egress

say "$engine $($engine version --format '{{.Client.Version}}' 2>/dev/null || true), $(uname -sr)"

say "networks: agent --internal, egress normal (NAT)"
show $engine network create --internal --subnet 198.18.230.0/24 --label "$label" $agent_net
show $engine network create --subnet "$wan_net.0/24" --label "$label" $egress_net
start_wan $egress_net
echo "  wan container at $wan_net.10 on $egress_net (DNS for allowed.test, HTTP, HTTPS)"

# sidecar NAME FIRST SECOND: dual-homed, FIRST given at creation, SECOND connected before
# the start (docker 20.10 takes one --network at creation).
sidecar() {
  $engine create --name "$1" --label "$label" --network "$2" --dns "$wan_net.10" \
    --entrypoint sleep "$base" 600 >/dev/null
  $engine network connect "$3" "$1"
  $engine start "$1" >/dev/null
}

say "sidecar with the agent network first"
sidecar bn-spike-sidecar-a $agent_net $egress_net
show $engine exec bn-spike-sidecar-a sh -c 'ip -o -4 addr show | grep -v " lo "; ip route; cat /etc/resolv.conf'
show $engine exec bn-spike-sidecar-a curl -sS -m 5 http://allowed.test/first-agent
$engine kill bn-spike-sidecar-a >/dev/null 2>&1 || true; $engine rm -f bn-spike-sidecar-a >/dev/null

say "sidecar with the egress network first, explicit DNS (the seed's working shape)"
sidecar bn-spike-sidecar $egress_net $agent_net
show $engine exec bn-spike-sidecar sh -c 'ip -o -4 addr show | grep -v " lo "; ip route; cat /etc/resolv.conf'
show $engine exec bn-spike-sidecar curl -sS -m 5 http://allowed.test/from-sidecar

say "the sidecar's address on the agent network, from inspect (no aliases needed)"
show $engine inspect bn-spike-sidecar --format "{{json .NetworkSettings.Networks}}"
sidecar_ip=$($engine inspect bn-spike-sidecar --format "{{(index .NetworkSettings.Networks \"$agent_net\").IPAddress}}")
echo "  -> $sidecar_ip"

say "agent on the internal network only (no capabilities added)"
$engine run -d --name bn-spike-sidecar-agent --label "$label" --network $agent_net \
  --entrypoint sleep "$base" 600 >/dev/null
show $engine exec bn-spike-sidecar-agent sh -c 'ip -o -4 addr show | grep -v " lo "; ip route; cat /etc/resolv.conf'
echo "  (the resolver above is never queried by this spike)"
show $engine exec bn-spike-sidecar-agent curl -sS -m 5 "http://$wan_net.10/direct-from-agent"
show $engine exec bn-spike-sidecar-agent curl -sS -m 5 "http://$sidecar_ip:9/"
show $engine exec bn-spike-sidecar-agent ip route replace default via "$sidecar_ip" dev eth0

say "what reached the wan"
show $engine logs bn-spike-sidecar-wan
