#!/bin/sh
# What cargo xtask vm-test runs inside each guest kernel (busybox sh, started by /init):
#   1. the BPF_PROG_TEST_RUN program tests (the compiled test binaries in /opt/drlb/tests);
#   2. an LVS-DR scenario on veth in namespaces: a client, a director, three real servers set up
#      by `drlb realserver setup`, HTTP and UDP from the client to the VIP;
#   3. the same on virtio-net NICs joined by a QEMU hub (the director's XDP in native mode on a
#      real NIC driver);
#   4. each topology served first by IPVS in DR mode, then by drlb, with the same clients and
#      checks, and one table row per run;
#   5. the dataplane benchmark, small, for its IPVS row (the host's kernel may have no IPVS).
# Lines the host reads: `VMTEST-CHECK ok|FAIL ...`, libtest's `test result:` lines,
# `VMTEST-ROW ...`, `VMTEST-BENCH ...` and `VMTEST-NOTE ...`. Exit code: the number of failed
# checks (0: all passed).
# Every wait is bounded: TCG is slow, but nothing may hang.

set -u

VIP=198.18.0.100
HTTP_PORT=8080
UDP_PORT=5353
CLIENT_IP=198.18.0.1
DIRECTOR_IP=198.18.0.2
SERVERS="rs1 rs2 rs3"
HOSTS="client director $SERVERS"
HTTP_REQUESTS=30
UDP_DATAGRAMS=30
# Seconds: one HTTP request, a service coming up, a program test binary.
REQUEST_TIMEOUT=10
COMMAND_TIMEOUT=30
START_TIMEOUT=90
PROGRAM_TESTS_TIMEOUT=900
BENCH_TIMEOUT=600
# Frames per benchmark run: enough for a rate, few enough for an emulated CPU.
BENCH_FRAMES=20000
WORK=/tmp/vmtest
mkdir -p "$WORK"

FAILED=0
check() { # check OK|FAIL WHAT...
    status=$1
    shift
    if [ "$status" = ok ]; then
        echo "VMTEST-CHECK ok $*"
    else
        echo "VMTEST-CHECK FAIL $*"
        FAILED=$((FAILED + 1))
    fi
}
expect() { # expect WHAT COMMAND...: a check that COMMAND succeeds
    what=$1
    shift
    if "$@"; then check ok "$what"; else check FAIL "$what"; fi
}

# Host facts, the same in every topology: name ─► address, MAC (the MACs the host gave the
# virtio NICs on the QEMU command line).
ip_of() {
    case $1 in
    client) echo $CLIENT_IP ;; director) echo $DIRECTOR_IP ;;
    rs1) echo 198.18.0.11 ;; rs2) echo 198.18.0.12 ;; rs3) echo 198.18.0.13 ;;
    esac
}
mac_of() { printf '02:d1:00:00:00:%02d\n' "$(ip_of "$1" | cut -d. -f4)"; }
# Debian's busybox runs its own applets before anything on the PATH, and its `ip` has no netns
# and no XDP: iproute2's, by path (drlb, which runs `ip` from the PATH, finds iproute2's).
ip() { /usr/sbin/ip "$@"; }
in_ns() { ns=$1; shift; ip netns exec "$ns" "$@"; }

progress() { echo "-- $(date +%T) $name: $*"; }

# waits up to SECONDS for COMMAND to succeed
wait_until() {
    seconds=$1
    shift
    end=$(($(date +%s) + seconds))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 1
    done
}

# ---------------------------------------------------------------------------------------------
# 1. Program tests

program_tests() {
    for binary in /opt/drlb/tests/*; do
        name=$(basename "$binary")
        echo "== program tests: $name"
        timeout $PROGRAM_TESTS_TIMEOUT "$binary" --include-ignored --test-threads=1 \
            >"$WORK/$name.out" 2>&1
        rc=$?
        # All of libtest's output: a verifier rejection's log is in a failure's panic message,
        # and the host prints the tail of this console when anything failed.
        cat "$WORK/$name.out"
        if [ $rc -eq 0 ]; then check ok "program tests $name"; else check FAIL "program tests $name (exit $rc)"; fi
    done
}

# ---------------------------------------------------------------------------------------------
# Topologies: every host has eth0 on one L2 segment.

# veth: every host's eth0 is a veth whose peer is a port of br0 in the namespace `switch`.
veth_up() {
    ip netns add switch
    ip -n switch link add br0 type bridge
    ip -n switch link set br0 up
    for host in $HOSTS; do
        ip netns add "$host" &&
            ip -n "$host" link add eth0 address "$(mac_of "$host")" type veth peer name "p-$host" netns switch &&
            ip -n switch link set "p-$host" master br0 up || return 1
    done
    # veth delivers what the director sends with XDP_TX only to a peer that runs XDP.
    in_ns switch drlb testbed hold-pass --interface p-director >"$WORK/hold-pass.log" 2>&1 &
    HOLD_PASS=$!
    wait_until $START_TIMEOUT has_xdp switch p-director || {
        check FAIL "veth: the pass program on p-director (log: $(tail -3 "$WORK/hold-pass.log"))"
        return 1
    }
}

# virtio: the NICs QEMU gave the guest (one per host, all on one QEMU hub, told apart by MAC),
# each moved into its host's namespace and renamed eth0.
virtio_up() {
    for host in $HOSTS; do
        ip netns add "$host"
        mac=$(mac_of "$host")
        nic=
        for dev in /sys/class/net/*; do
            [ "$(cat "$dev/address")" = "$mac" ] && nic=$(basename "$dev")
        done
        if [ -z "$nic" ]; then
            check FAIL "virtio: no NIC with MAC $mac for $host"
            return 1
        fi
        ip link set "$nic" netns "$host"
        ip -n "$host" link set "$nic" name eth0
    done
}

hosts_up() { # addresses, checksums in software (as a NIC does before the wire)
    for host in $HOSTS; do
        ip -n "$host" link set lo up
        ip -n "$host" addr add "$(ip_of "$host")/24" dev eth0
        ip -n "$host" link set eth0 up
        in_ns "$host" ethtool -K eth0 tx off >/dev/null 2>&1
    done
}

topology_down() {
    [ -n "${HOLD_PASS:-}" ] && kill "$HOLD_PASS" 2>/dev/null && wait "$HOLD_PASS" 2>/dev/null
    HOLD_PASS=
    for ns in $(ip netns list | cut -d' ' -f1); do
        for pid in $(ip netns pids "$ns"); do kill "$pid" 2>/dev/null; done
    done
    sleep 1
    for ns in $(ip netns list | cut -d' ' -f1); do
        for pid in $(ip netns pids "$ns"); do kill -9 "$pid" 2>/dev/null; done
        ip netns del "$ns"
    done
    # Virtio NICs return to the root namespace when theirs is deleted: wait for all of them.
    wait_until 10 sh -c "[ \$(ls /sys/class/net | wc -l) -ge $VIRTIO_NICS ]"
}

real_servers_up() {
    for rs in $SERVERS; do
        in_ns "$rs" timeout $COMMAND_TIMEOUT drlb realserver setup --vip $VIP --interface eth0 --state-dir "$WORK/state-$rs" \
            >"$WORK/$rs-setup.log" 2>&1 ||
            check FAIL "$rs: drlb realserver setup: $(tail -3 "$WORK/$rs-setup.log")"
        own=$(ip_of "$rs")
        in_ns "$rs" drlb-testsrv http --listen $VIP:$HTTP_PORT --listen "$own:$HTTP_PORT" --name "$rs" \
            >"$WORK/$rs-http.log" 2>&1 &
        in_ns "$rs" drlb-testsrv udp-echo --listen $VIP:$UDP_PORT --listen "$own:$UDP_PORT" --name "$rs" \
            >"$WORK/$rs-udp.log" 2>&1 &
    done
    for rs in $SERVERS; do
        wait_until $START_TIMEOUT serves "$(ip_of "$rs")" "$rs" && continue
        check FAIL "$rs: its HTTP server does not answer on its own address: $(http_get "$(ip_of "$rs")" 2>&1 | tail -2)"
        echo "$rs's addresses:"; ip -n "$rs" addr; echo "its server's log:"; tail -5 "$WORK/$rs-http.log"
        echo "the client's neighbours:"; ip -n client neigh
        return 1
    done
}

# one GET from the client to ADDRESS; prints the body (the serving real server's name)
http_get() { in_ns client timeout $REQUEST_TIMEOUT wget -q -O - "http://$1:$HTTP_PORT/"; }
serves() { [ "$(http_get "$1" 2>/dev/null)" = "$2" ]; } # serves ADDRESS NAME
has_xdp() { ip -n "$1" link show "$2" | grep -q xdp; }  # has_xdp NETNS DEV

# ---------------------------------------------------------------------------------------------
# Directors

ipvs_up() {
    # IPVS in DR mode answers for the VIP as a local address: the director holds it.
    ip -n director addr add $VIP/32 dev eth0
    in_ns director ipvsadm -A -t $VIP:$HTTP_PORT -s rr &&
        in_ns director ipvsadm -A -u $VIP:$UDP_PORT -s rr || { check FAIL "ipvs: ipvsadm -A"; return 1; }
    for rs in $SERVERS; do
        in_ns director ipvsadm -a -t $VIP:$HTTP_PORT -r "$(ip_of "$rs"):$HTTP_PORT" -g &&
            in_ns director ipvsadm -a -u $VIP:$UDP_PORT -r "$(ip_of "$rs"):$UDP_PORT" -g ||
            { check FAIL "ipvs: ipvsadm -a $rs"; return 1; }
    done
}

drlb_up() {
    backends=
    for rs in $SERVERS; do backends="$backends[[service.backend]]
address = \"$(ip_of "$rs")\"
"; done
    cat >"$WORK/drlb.toml" <<EOF
[director]
interface = "eth0"
xdp_mode = "native"

[[service]]
vip = "$VIP"
port = $HTTP_PORT
protocol = "tcp"
$backends
[[service]]
vip = "$VIP"
port = $UDP_PORT
protocol = "udp"
$backends
EOF
    rm -rf "$WORK/drlb-state"
    in_ns director drlb run --config "$WORK/drlb.toml" --state-dir "$WORK/drlb-state" \
        >"$WORK/drlb.log" 2>&1 &
    if ! wait_until $START_TIMEOUT in_ns director timeout $COMMAND_TIMEOUT drlb stats --state-dir "$WORK/drlb-state"; then
        check FAIL "drlb run did not become ready; its log ends:
$(tail -20 "$WORK/drlb.log")"
        return 1
    fi
}

# ---------------------------------------------------------------------------------------------
# One run: LINK (veth|virtio) served by DIRECTOR (ipvs|drlb).

# starts tcpdump (no promiscuous mode: a hub shows every port every frame) on HOST's eth0;
# its pid in CAPTURE_PID (not printed: a $(...) would wait for the capture to end)
capture() { # capture HOST FILTER FILE
    ip netns exec "$1" tcpdump -p -Z root -n -e -l -i eth0 "$2" >"$3" 2>"$3.err" &
    CAPTURE_PID=$!
}
count_lines() { grep -c "$2" "$1" 2>/dev/null || true; }

run_scenario() {
    link=$1
    director=$2
    name="$link/$director"
    echo "== scenario $name"
    HOLD_PASS=
    if ! { "${link}_up" && hosts_up; }; then
        check FAIL "$name: topology"
        topology_down
        return
    fi
    progress "topology up"
    if ! real_servers_up; then
        topology_down
        return
    fi
    progress "real servers up"
    if ! "${director}_up"; then
        check FAIL "$name: the director did not start"
        topology_down
        return
    fi

    progress "director up"
    driver=$(in_ns director ethtool -i eth0 | sed -n 's/^driver: //p')
    xdp=$(ip -n director link show eth0 | grep -o 'xdp[a-z]*' | head -1)
    if [ "$driver" = "${link}_net" ] || [ "$driver" = "$link" ]; then
        check ok "$name: the director's eth0 is driven by $driver"
    else
        check FAIL "$name: the director's eth0 is driven by '$driver', not $link"
    fi
    if [ "$director" = drlb ]; then
        # `xdp`: driver (native) mode; `xdpgeneric` would be the kernel's fallback
        if [ "$xdp" = xdp ]; then check ok "$name: drlb's program runs in the $driver driver (native XDP)"; else
            check FAIL "$name: drlb's program is attached as '$xdp', not in native mode: $(ip -n director link show eth0)"
        fi
    fi
    capture client "ip and src host $VIP" "$WORK/client.cap"
    on_client=$CAPTURE_PID
    capture director "(ip and src host $VIP) or (icmp and dst host $DIRECTOR_IP)" "$WORK/director.cap"
    on_director=$CAPTURE_PID
    wait_until 30 grep -q listening "$WORK/client.cap.err"
    wait_until 30 grep -q listening "$WORK/director.cap.err"

    progress "captures started"
    # HTTP: each request a new connection from a new source port.
    : >"$WORK/http.out"
    n=0
    while [ $n -lt $HTTP_REQUESTS ]; do
        n=$((n + 1))
        http_get $VIP >>"$WORK/http.out" 2>&1 || echo "request $n failed" >>"$WORK/http.out"
    done
    in_ns client drlb-testsrv udp-client --to $VIP:$UDP_PORT --count $UDP_DATAGRAMS --timeout-ms 3000 \
        >"$WORK/udp.out" 2>&1
    udp_rc=$?
    progress "traffic sent"
    # The capture's positive control: the director does see what is sent to it.
    in_ns client ping -c 2 -W 2 $DIRECTOR_IP >/dev/null 2>&1
    arp_owner=$(ip -n client neigh show $VIP | sed -n 's/.*lladdr \([0-9a-f:]*\).*/\1/p')
    sleep 2 # tcpdump prints what it saw
    kill "$on_client" "$on_director" 2>/dev/null
    wait "$on_client" "$on_director" 2>/dev/null

    # What each director counted, per real server (IPVS's rates and totals lag ~2 s).
    counters=
    if [ "$director" = ipvs ]; then
        sleep 3
        in_ns director timeout $COMMAND_TIMEOUT ipvsadm -Ln --stats >"$WORK/counters" 2>&1
        for rs in $SERVERS; do
            # `  -> 198.18.0.11:8080  Conns InPkts OutPkts InBytes OutBytes`, TCP then UDP
            pkts=$(awk -v a="$(ip_of "$rs")" '$1 == "->" && index($2, a ":") == 1 { s += $4 } END { print s + 0 }' "$WORK/counters")
            counters="$counters $rs=$pkts"
        done
    else
        in_ns director timeout $COMMAND_TIMEOUT drlb stats --state-dir "$WORK/drlb-state" >"$WORK/counters" 2>&1
        for rs in $SERVERS; do
            # `  198.18.0.11  eth0  1  02:d1:00:00:00:11  ...  PACKETS BYTES`, per service
            pkts=$(awk -v a="$(ip_of "$rs")" '$1 == a { s += $(NF - 1) } END { print s + 0 }' "$WORK/counters")
            counters="$counters $rs=$pkts"
        done
    fi

    progress "counters read"
    # Checks
    http_ok=0
    spread=
    for rs in $SERVERS; do
        h=$(grep -cx "$rs" "$WORK/http.out")
        u=$(grep -c "^$rs request " "$WORK/udp.out")
        http_ok=$((http_ok + h))
        spread="$spread $rs=$h/$u"
        [ "$h" -gt 0 ] && [ "$u" -gt 0 ] || check FAIL "$name: $rs served $h HTTP requests and $u datagrams"
    done
    if [ $http_ok -eq $HTTP_REQUESTS ]; then check ok "$name: $HTTP_REQUESTS HTTP requests answered"; else
        check FAIL "$name: $http_ok of $HTTP_REQUESTS HTTP requests answered: $(grep -v '^rs' "$WORK/http.out" | head -3)"
    fi
    if [ $udp_rc -eq 0 ]; then check ok "$name: $UDP_DATAGRAMS datagrams answered"; else
        check FAIL "$name: UDP datagrams lost: $(tail -3 "$WORK/udp.out")"
    fi
    replies=$(count_lines "$WORK/client.cap" " > $(mac_of client)")
    direct=0
    for rs in $SERVERS; do
        direct=$((direct + $(count_lines "$WORK/client.cap" "^[^ ]* $(mac_of "$rs") > ")))
    done
    via_director=$(count_lines "$WORK/client.cap" "^[^ ]* $(mac_of director) > ")
    seen_on_director=$(count_lines "$WORK/director.cap" "$VIP[.:]* >")
    control=$(count_lines "$WORK/director.cap" "ICMP echo request")
    if [ "$replies" -gt 0 ] && [ "$direct" -eq "$replies" ] && [ "$via_director" -eq 0 ]; then
        check ok "$name: all $replies replies came straight from the real servers"
    else
        check FAIL "$name: of $replies replies $direct came from real servers, $via_director from the director"
    fi
    if [ "$control" -gt 0 ] && [ "$seen_on_director" -eq 0 ]; then
        check ok "$name: no reply reached the director"
    else
        check FAIL "$name: the director saw $seen_on_director replies (capture control: $control echo requests)"
    fi
    if [ "$arp_owner" = "$(mac_of director)" ]; then check ok "$name: the director owns the VIP"; else
        check FAIL "$name: the client resolved the VIP to '$arp_owner', not the director's $(mac_of director)"
    fi
    for c in $counters; do
        [ "${c#*=}" -gt 0 ] || check FAIL "$name: the director counted no packets for ${c%=*}: $(cat "$WORK/counters")"
    done
    ROWS="$ROWS
VMTEST-ROW $link $director ($driver${xdp:+, $xdp}) http/udp:$spread | replies direct $direct/$replies, via director $via_director, seen on director $seen_on_director | VIP ARP owner $arp_owner | counted packets:$counters"
    echo "$ROWS" | tail -1
    [ "$director" = drlb ] && { echo "drlb stats:"; cat "$WORK/counters"; }
    [ "$director" = ipvs ] && { echo "ipvsadm -Ln --stats:"; cat "$WORK/counters"; }
    topology_down
}

# ---------------------------------------------------------------------------------------------
# 5. The dataplane benchmark, small, so that its IPVS contender runs on a kernel with IPVS.

bench() {
    name=bench
    echo "== benchmark: dataplane (an emulated CPU: figures compare only with each other)"
    DRLB_BIN=/opt/drlb/drlb timeout $BENCH_TIMEOUT /opt/drlb/dataplane --quick \
        --frames $BENCH_FRAMES --runs 1 --flows 1 --flows 1000 --protocol udp --out "$WORK/bench" \
        --command "cargo xtask vm-test (QEMU TCG guest: emulated CPU)" >"$WORK/bench.out" 2>&1
    rc=$?
    cat "$WORK/bench.out"
    md="$WORK/bench/dataplane.md"
    # The table's IPVS rows; the report's notes start with "IPVS:" when it skipped them.
    grep "IPVS DR" "$md" 2>/dev/null | sed 's/^/VMTEST-BENCH /'
    # A rate is no check (an emulated CPU), but frames lost at these rates are worth a note.
    awk -F'|' '/^\| IPVS DR/ && $6 + 0 > 0 { gsub(/ /, ""); print "VMTEST-NOTE benchmark: IPVS DR lost " $6 " of its frames (" $3 ", " $4 " flows)" }' "$md" 2>/dev/null
    if [ $rc -eq 0 ] && grep -q "IPVS DR" "$md" && ! grep -q "^IPVS:" "$md"; then
        check ok "bench: the dataplane benchmark ran every contender, IPVS included"
    else
        check FAIL "bench: the dataplane benchmark (exit $rc) did not measure IPVS: $(grep '^IPVS:' "$md" 2>/dev/null)"
    fi
}

ROWS=
VIRTIO_NICS=$(ls /sys/class/net | wc -l)
# `cargo xtask vm-test --only PART` puts vmtest.only=PART on the kernel's command line.
ONLY=$(sed -n 's/.*vmtest\.only=\([^ ]*\).*/\1/p' /proc/cmdline)
wanted() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }
# The host boots more CPUs than it wants online (vmtest.online_cpus=N on the command line): the
# rest go offline, so that more CPUs are possible than online, as on many servers.
ONLINE_CPUS=$(sed -n 's/.*vmtest\.online_cpus=\([0-9]*\).*/\1/p' /proc/cmdline)
for cpu in /sys/devices/system/cpu/cpu[0-9]*; do
    n=${cpu##*/cpu}
    if [ -n "$ONLINE_CPUS" ] && [ "$n" -ge "$ONLINE_CPUS" ]; then
        echo 0 >"$cpu/online" || check FAIL "taking CPU $n offline"
    fi
done
echo "== kernel $(uname -r) ($(cat /vm/kernel)), $(nproc) CPUs online of $(cat /sys/devices/system/cpu/possible) possible, $VIRTIO_NICS interfaces${ONLY:+, only $ONLY}"
wanted program && program_tests
for link in veth virtio; do
    for director in ipvs drlb; do
        wanted $link/$director && run_scenario $link $director
    done
done
wanted bench && bench
echo "== IPVS beside drlb on $(uname -r) (link director | per real server HTTP/UDP answered | replies | ARP | per real server packets the director counted)"
echo "$ROWS" | sed 1d
exit $FAILED
