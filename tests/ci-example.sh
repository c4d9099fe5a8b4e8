#!/usr/bin/env bash
# Test a service behind drlb in CI: build a throw-away LVS-DR testbed, run the service on every
# real server, and check from the client that each one answers through the VIP. Needs root,
# iproute2, ethtool, python3 and curl. Copy it and replace the service with yours.
#
#   DRLB=drlb            the drlb binary
#   TESTBED_NAME=ci      names the namespaces (drlbtb-NAME-*): give parallel jobs their own
#   TESTBED_ARGS=        more arguments for `drlb testbed up`, e.g. --servers 2 --two-armed;
#                        with --ipv6 the servers are reached through the IPv6 VIP too
set -euo pipefail

DRLB=${DRLB:-drlb}
NAME=${TESTBED_NAME:-ci}
MAX_REQUESTS=30        # the curl loop is bounded
SERVICE_SECONDS=60     # and so are the services

workdir=$(mktemp -d)
# Remove the testbed whatever happens (idempotent).
trap '"$DRLB" testbed down --name "$NAME"; rm -rf "$workdir"' EXIT

# shellcheck disable=SC2086 # TESTBED_ARGS is a list of arguments
testbed=$("$DRLB" testbed up --name "$NAME" ${TESTBED_ARGS:-})
read -r vip vip6 client servers < <(python3 -c '
import json, sys
t = json.load(sys.stdin)
print(t["vip"], t.get("vip6", "-"), t["client"]["netns"], " ".join(s["netns"] for s in t["servers"]))' <<<"$testbed")
echo "testbed $NAME: VIP $vip, IPv6 VIP $vip6, client $client, servers $servers"
urls=("http://$vip")
bind=()
if [[ $vip6 != - ]]; then
    urls+=("http://[$vip6]")
    bind=(--bind ::)   # both families on one socket
fi

# The service: an HTTP server on port 80 of every real server, saying which server it is.
for server in $servers; do
    mkdir -p "$workdir/$server"
    echo "$server" >"$workdir/$server/id"
    ip netns exec "$server" timeout "$SERVICE_SECONDS" \
        python3 -m http.server 80 "${bind[@]}" --directory "$workdir/$server" >"$workdir/$server.log" 2>&1 &
done

# Through the VIP until every server has answered (the director's health checks bring each
# one up about two seconds after it starts listening).
for url in "${urls[@]}"; do
    declare -A answered=()
    for ((i = 1; i <= MAX_REQUESTS && ${#answered[@]} < $(wc -w <<<"$servers"); i++)); do
        if id=$(ip netns exec "$client" curl -sS --globoff --fail --max-time 2 "$url/id"); then
            answered[$id]=1
        else
            sleep 0.5
        fi
    done
    echo "answered through $url: ${!answered[*]}"
    for server in $servers; do
        [[ -n ${answered[$server]:-} ]] || { echo "FAIL: $server never answered through $url" >&2; exit 1; }
    done
    unset answered
done
echo "OK: every real server answered through the VIP"
