#!/bin/sh
# The scripted agent of `bottleneck demo`. It runs as an unprivileged user in the agent
# namespace under bottleneck-init, with no proxy settings: the shim routed everything
# through the gateway. Each section starts with a line `==NAME==`; the demo reads them.
D=$(dirname "$0")
PY=/usr/bin/python3
probe() { if [ -x "$PY" ]; then "$PY" "$D/probe.py" "$@" 2>&1; else echo "python3-missing"; fi; }
now() { date +%s%3N; }

echo "==user=="; id -un
echo "==env=="; env

# First, before any DNS probe: the kernel rate-limits the ICMP errors that make UDP fail
# fast, and queries to a gateway without a DNS server use them up.
echo "==udp=="
probe udp 198.51.100.7 7

# Names: through the gateway's DNS server when it answers; otherwise (it is not there
# yet) curl is told the addresses, which only have to route to the gateway: it decides
# by name (SNI, Host) and resolves names itself.
echo "==dns=="
probe dns allowed.test
RES=""
if ! getent hosts allowed.test >/dev/null 2>&1; then
  RES="--resolve allowed.test:443:198.51.100.10 --resolve denied.test:443:198.51.100.10 --resolve other.allowed.test:443:203.0.113.10"
fi
C="curl -sS --max-time 10 $RES"

echo "==allowed=="
$C -w '\n%{http_code}\n' https://allowed.test/echo/hello 2>&1

# A denied name does not resolve; an agent that knows the address anyway (hard-coded,
# or from another resolver) still only reaches the gateway, which refuses by name.
echo "==denied-dns=="
probe dns denied.test
echo "==denied=="
$C --resolve denied.test:443:198.51.100.10 -D - -o - -w '\n%{http_code}\n' https://denied.test/ 2>&1

echo "==inject=="
$C -w '\n%{http_code}\n' -H 'Authorization: Bearer made-up-by-the-agent' \
  -H 'content-type: application/json' -d '{"prompt":"hi"}' \
  https://other.allowed.test/v1/messages 2>&1

echo "==exfil=="
probe dns "$EXFIL_NAME"

echo "==direct-ip=="
t=$(now); $C -o /dev/null http://198.51.100.7:7/ 2>&1; echo "exit=$? ms=$(( $(now) - t ))"
t=$(now); $C -o /dev/null https://198.51.100.10/ 2>&1; echo "exit=$? ms=$(( $(now) - t ))"

echo "==end=="
