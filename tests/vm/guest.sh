#!/bin/sh
# What cargo xtask vm-test runs inside each guest kernel (busybox sh, started by /init):
#   1. the BPF_PROG_TEST_RUN program tests (the compiled test binaries in /opt/drlb/tests);
#   2. an LVS-DR scenario on veth in namespaces: a client, a director, three real servers set up
#      by `drlb realserver setup`, HTTP and UDP from the client to the VIP;
#   3. the same on virtio-net NICs joined by a QEMU hub (the director's XDP in native mode on a
#      real NIC driver);
#   4. each topology served first by IPVS in DR mode, then by drlb, with the same clients and
#      checks, and one table row per run;
#   5. the dataplane benchmark, small, for its IPVS row (the host's kernel may have no IPVS);
#   6. a director on an 802.1Q trunk serving VLAN 100 from VLAN 200 (the host's kernel may
#      have no 802.1Q).
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

# ---------------------------------------------------------------------------------------------
# 6. A director on a VLAN trunk (tests/tests/vlan.rs's scenario; the host's kernel may have no
# 802.1Q). A switch namespace with one bridge per VLAN: the client on VLAN 100, the real
# servers on VLAN 200 (and on VLAN 100 for their direct replies), a host on VLAN 300, and the
# director's eth0 a trunk port carrying all three (802.1Q devices p-dir.N on the switch's side).
# drlb runs two-armed on eth0.100 and eth0.200: attached natively to eth0, it serves the VIP on
# VLAN 100 from the backends on VLAN 200, rewriting the tag and sending with XDP_TX.

VLAN_CLIENT=100
VLAN_BACKEND=200
VLAN_OTHER=300
VLAN_VIP=198.18.100.100
VLAN_CLIENT_IP=198.18.100.2
VLAN_OTHER_IP=198.18.30.2
# The director's address on VLAN 300, which is not drlb's: the stack answers it.
VLAN_DIRECTOR_OTHER_IP=198.18.30.10
VLAN_DIRECTOR_MAC=02:d1:00:00:00:10
VLAN_SERVERS="rs1 rs2"
VLAN_REQUESTS=30
# Frames per request the director forwards at least (SYN, the request, ACKs, FIN).
VLAN_FRAMES_PER_REQUEST=3
# Kept in guest.sh's knowledge of the switch: the servers' backend and client-side addresses.
vlan_backend_ip() { case $1 in rs1) echo 198.18.200.11 ;; rs2) echo 198.18.200.12 ;; esac; }
vlan_client_side_ip() { case $1 in rs1) echo 198.18.100.11 ;; rs2) echo 198.18.100.12 ;; esac; }
# rsN's MACs: eth0 on VLAN 200 (02:d1:c8:...), eth1 on VLAN 100 (02:d1:64:...).
vlan_rs_mac() { printf '02:d1:%s:00:00:1%s\n' "$1" "$(($(echo "$2" | tr -d rs) - 1))"; }

# Plugs HOST's IFNAME into the switch's bridge of VLAN as an access port (untagged).
vlan_access_port() { # HOST PORT IFNAME MAC CIDR VLAN
    ip -n switch link add "$2" type veth peer name "$3" netns "$1" &&
        ip -n switch link set "$2" master "vlan$6" up &&
        ip -n "$1" link set "$3" address "$4" &&
        ip -n "$1" addr add "$5" dev "$3" &&
        ip -n "$1" link set "$3" up &&
        # Frames leave with complete checksums, as on a wire.
        { in_ns "$1" ethtool -K "$3" tx off >/dev/null 2>&1 || true; }
}

vlan_topology_up() {
    ip netns add switch || return 1
    for host in client other director $VLAN_SERVERS; do ip netns add "$host" || return 1; done
    for vlan in $VLAN_CLIENT $VLAN_BACKEND $VLAN_OTHER; do
        ip -n switch link add "vlan$vlan" type bridge && ip -n switch link set "vlan$vlan" up || return 1
    done
    vlan_access_port client p-client eth0 02:d1:64:00:00:02 $VLAN_CLIENT_IP/24 $VLAN_CLIENT || return 1
    vlan_access_port other p-other eth0 02:d1:1e:00:00:02 $VLAN_OTHER_IP/24 $VLAN_OTHER || return 1
    ip -n switch link add p-dir type veth peer name eth0 netns director &&
        ip -n switch link set p-dir up &&
        ip -n director link set eth0 address $VLAN_DIRECTOR_MAC &&
        ip -n director link set eth0 up || return 1
    for vlan in $VLAN_CLIENT $VLAN_BACKEND $VLAN_OTHER; do
        case $vlan in
        $VLAN_CLIENT) cidr=198.18.100.10/24 ;; $VLAN_BACKEND) cidr=198.18.200.10/24 ;;
        *) cidr=$VLAN_DIRECTOR_OTHER_IP/24 ;;
        esac
        # The switch's trunk port: one 802.1Q device per VLAN in that VLAN's bridge.
        ip -n switch link add link p-dir name "p-dir.$vlan" type vlan id "$vlan" &&
            ip -n switch link set "p-dir.$vlan" master "vlan$vlan" up &&
            ip -n director link add link eth0 name "eth0.$vlan" type vlan id "$vlan" &&
            ip -n director addr add "$cidr" dev "eth0.$vlan" &&
            ip -n director link set "eth0.$vlan" up || return 1
    done
    # The switch port is the wire: tags travel in the frame (a veth would otherwise hand them
    # over beside it, where XDP cannot see them). And veth delivers what the director sends
    # with XDP_TX only to a peer that runs XDP.
    in_ns switch ethtool -K p-dir txvlan off >/dev/null || return 1
    in_ns switch drlb testbed hold-pass --interface p-dir >"$WORK/hold-pass.log" 2>&1 &
    HOLD_PASS=$!
    wait_until $START_TIMEOUT has_xdp switch p-dir || {
        check FAIL "vlan: the pass program on p-dir (log: $(tail -3 "$WORK/hold-pass.log"))"
        return 1
    }
    for rs in $VLAN_SERVERS; do
        vlan_access_port "$rs" "p-$rs" eth0 "$(vlan_rs_mac c8 "$rs")" "$(vlan_backend_ip "$rs")/24" $VLAN_BACKEND &&
            vlan_access_port "$rs" "p-$rs-c" eth1 "$(vlan_rs_mac 64 "$rs")" "$(vlan_client_side_ip "$rs")/24" $VLAN_CLIENT &&
            ip -n "$rs" link set lo up &&
            ip -n "$rs" addr add $VLAN_VIP/32 dev lo || return 1
        # LVS-DR's ARP sysctls; requests arrive on eth0, replies leave by eth1 (no rp_filter).
        for conf in all lo eth0 eth1; do
            in_ns "$rs" sysctl -q -w "net.ipv4.conf.$conf.arp_ignore=1" "net.ipv4.conf.$conf.arp_announce=2" || return 1
        done
        for conf in all default eth0 eth1; do
            in_ns "$rs" sysctl -q -w "net.ipv4.conf.$conf.rp_filter=0" || return 1
        done
        own=$(vlan_backend_ip "$rs")
        in_ns "$rs" drlb-testsrv http --listen $VLAN_VIP:$HTTP_PORT --listen "$own:$HTTP_PORT" --name "$rs" \
            >"$WORK/$rs-http.log" 2>&1 &
    done
    for rs in $VLAN_SERVERS; do
        own=$(vlan_backend_ip "$rs")
        wait_until $START_TIMEOUT sh -c "[ \"\$(/usr/sbin/ip netns exec $rs timeout $REQUEST_TIMEOUT wget -q -O - http://$own:$HTTP_PORT/)\" = $rs ]" || {
            check FAIL "vlan: $rs's HTTP server does not answer on $own: $(tail -3 "$WORK/$rs-http.log")"
            return 1
        }
    done
}

vlan_config() { # vlan_config FILE INTERFACES BACKEND...: a TCP service on the VIP
    file=$1
    interfaces=$2
    shift 2
    {
        printf '[director]\ninterfaces = %s\nxdp_mode = "native"\n\n' "$interfaces"
        printf '[[service]]\nvip = "%s"\nport = %s\nprotocol = "tcp"\n' $VLAN_VIP $HTTP_PORT
        for backend in "$@"; do printf '\n[[service.backend]]\naddress = "%s"\n' "$backend"; done
    } >"$file"
}

vlan() {
    name=vlan
    echo "== scenario vlan (a director on an 802.1Q trunk)"
    HOLD_PASS=
    if [ -e /proc/net/vlan/config ]; then check ok "vlan: the kernel has 802.1Q (8021q loaded)"; else
        check FAIL "vlan: no /proc/net/vlan/config: the 8021q module is not loaded"
        return
    fi
    if ! vlan_topology_up; then
        check FAIL "vlan: topology"
        topology_down
        return
    fi
    progress "topology up"

    # A VLAN device beside an untagged interface: the program cannot add or remove a tag in
    # place, so `drlb run` refuses the config, says why and attaches nothing.
    # (Its backend is on VLAN 100, so that the mix is the config's one problem.)
    vlan_config "$WORK/vlan-mixed.toml" "[\"eth0.$VLAN_CLIENT\", \"eth0\"]" "$(vlan_client_side_ip rs1)"
    rm -rf "$WORK/vlan-mixed-state"
    if in_ns director timeout $COMMAND_TIMEOUT drlb run --config "$WORK/vlan-mixed.toml" \
        --state-dir "$WORK/vlan-mixed-state" >"$WORK/vlan-mixed.log" 2>&1; then
        check FAIL "vlan: drlb run accepted a mix of eth0.$VLAN_CLIENT and eth0: $(tail -3 "$WORK/vlan-mixed.log")"
    elif grep -q "mixes VLAN devices (eth0.$VLAN_CLIENT) with untagged interfaces (eth0)" "$WORK/vlan-mixed.log"; then
        check ok "vlan: a mix of eth0.$VLAN_CLIENT and eth0 is refused, saying so"
    else
        check FAIL "vlan: the mix was refused without saying why: $(tail -3 "$WORK/vlan-mixed.log")"
    fi
    if has_xdp director eth0; then
        check FAIL "vlan: the refused config left a program on eth0: $(ip -n director link show eth0)"
    else
        check ok "vlan: the refused config attached nothing"
    fi

    vlan_config "$WORK/vlan.toml" "[\"eth0.$VLAN_CLIENT\", \"eth0.$VLAN_BACKEND\"]" \
        $(for rs in $VLAN_SERVERS; do vlan_backend_ip "$rs"; done)
    rm -rf "$WORK/vlan-state"
    in_ns director drlb run --config "$WORK/vlan.toml" --state-dir "$WORK/vlan-state" \
        >"$WORK/vlan-drlb.log" 2>&1 &
    if ! wait_until $START_TIMEOUT in_ns director timeout $COMMAND_TIMEOUT drlb stats --state-dir "$WORK/vlan-state"; then
        check FAIL "vlan: drlb run did not become ready; its log ends:
$(tail -20 "$WORK/vlan-drlb.log")"
        topology_down
        return
    fi
    progress "director up"
    xdp=$(ip -n director link show eth0 | grep -o 'xdp[a-z]*' | head -1)
    if [ "$xdp" = xdp ]; then check ok "vlan: drlb's program is attached natively to the trunk's parent eth0"; else
        check FAIL "vlan: eth0 has '$xdp', not a native program: $(ip -n director link show eth0)"
    fi
    # veth strips tags on receive by default (rx-vlan-offload): drlb turned that off, and says so.
    if in_ns director ethtool -k eth0 | grep -q 'rx-vlan-offload: off' &&
        grep -q "rx VLAN offload turned off" "$WORK/vlan-drlb.log"; then
        check ok "vlan: drlb turned rx VLAN offload off on eth0 and said so"
    else
        check FAIL "vlan: rx VLAN offload on eth0: $(in_ns director ethtool -k eth0 | grep rx-vlan-offload); drlb's log: $(grep -i offload "$WORK/vlan-drlb.log")"
    fi

    # The trunk as the switch sees it (every tagged frame, tags shown), and what reaches the client.
    ip netns exec switch tcpdump -p -Z root -n -e -l -i p-dir vlan >"$WORK/vlan-trunk.cap" 2>"$WORK/vlan-trunk.cap.err" &
    on_trunk=$!
    capture client "ip and src host $VLAN_VIP" "$WORK/vlan-client.cap"
    on_client=$CAPTURE_PID
    wait_until 30 grep -q listening "$WORK/vlan-trunk.cap.err"
    wait_until 30 grep -q listening "$WORK/vlan-client.cap.err"
    progress "captures started"

    : >"$WORK/vlan-http.out"
    n=0
    while [ $n -lt $VLAN_REQUESTS ]; do
        n=$((n + 1))
        in_ns client timeout $REQUEST_TIMEOUT wget -q -O - "http://$VLAN_VIP:$HTTP_PORT/" >>"$WORK/vlan-http.out" 2>&1 ||
            echo "request $n failed" >>"$WORK/vlan-http.out"
    done
    progress "traffic sent"
    # VLAN 300 is not drlb's: the director's own address there answers through the stack (also
    # the trunk capture's positive control), and nobody answers ARP for the VIP there.
    if in_ns other timeout $COMMAND_TIMEOUT ping -c 2 -W 2 $VLAN_DIRECTOR_OTHER_IP >"$WORK/vlan-ping.out" 2>&1; then
        check ok "vlan: VLAN $VLAN_OTHER passes to the director's stack (its address there answers ping)"
    else
        check FAIL "vlan: the director's $VLAN_DIRECTOR_OTHER_IP on VLAN $VLAN_OTHER does not answer ping: $(tail -2 "$WORK/vlan-ping.out")"
    fi
    if in_ns other timeout $COMMAND_TIMEOUT arping -c 2 -w 3 -I eth0 $VLAN_VIP >"$WORK/vlan-arping.out" 2>&1; then
        check FAIL "vlan: the VIP is answered on VLAN $VLAN_OTHER: $(cat "$WORK/vlan-arping.out")"
    else
        check ok "vlan: no ARP answer for the VIP on VLAN $VLAN_OTHER"
    fi
    sleep 2 # tcpdump prints what it saw
    kill "$on_trunk" "$on_client" 2>/dev/null
    wait "$on_trunk" "$on_client" 2>/dev/null
    in_ns director timeout $COMMAND_TIMEOUT drlb stats --state-dir "$WORK/vlan-state" >"$WORK/vlan-counters" 2>&1

    # Checks
    spread=
    answered=0
    for rs in $VLAN_SERVERS; do
        h=$(grep -cx "$rs" "$WORK/vlan-http.out")
        answered=$((answered + h))
        spread="$spread $rs=$h"
        [ "$h" -gt 0 ] || check FAIL "vlan: $rs on VLAN $VLAN_BACKEND served none of the requests"
    done
    if [ $answered -eq $VLAN_REQUESTS ]; then check ok "vlan: $VLAN_REQUESTS requests to the VIP on VLAN $VLAN_CLIENT answered:$spread"; else
        check FAIL "vlan: $answered of $VLAN_REQUESTS requests answered: $(grep -v '^rs' "$WORK/vlan-http.out" | head -3)"
    fi
    # Frames for the VIP that leave the director on the trunk retagged for VLAN 200.
    retagged=$(grep "vlan $VLAN_BACKEND," "$WORK/vlan-trunk.cap" | grep -c "> $VLAN_VIP.$HTTP_PORT:")
    if [ "$retagged" -ge $((VLAN_FRAMES_PER_REQUEST * VLAN_REQUESTS)) ]; then
        check ok "vlan: $retagged frames for the VIP left the director tagged for VLAN $VLAN_BACKEND"
    else
        check FAIL "vlan: only $retagged frames for the VIP left the director tagged for VLAN $VLAN_BACKEND: $(head -5 "$WORK/vlan-trunk.cap")"
    fi
    replies=$(count_lines "$WORK/vlan-client.cap" " > 02:d1:64:00:00:02")
    direct=0
    for rs in $VLAN_SERVERS; do
        direct=$((direct + $(count_lines "$WORK/vlan-client.cap" "^[^ ]* $(vlan_rs_mac 64 "$rs") > ")))
    done
    on_trunk_replies=$(grep -c " $VLAN_VIP.$HTTP_PORT > " "$WORK/vlan-trunk.cap")
    control=$(grep "vlan $VLAN_OTHER," "$WORK/vlan-trunk.cap" | grep -c "ICMP echo request")
    if [ "$replies" -gt 0 ] && [ "$direct" -eq "$replies" ]; then
        check ok "vlan: all $replies replies came straight from the real servers on VLAN $VLAN_CLIENT"
    else
        check FAIL "vlan: of $replies replies $direct came from the real servers"
    fi
    if [ "$control" -gt 0 ] && [ "$on_trunk_replies" -eq 0 ]; then
        check ok "vlan: no reply crossed the director's trunk"
    else
        check FAIL "vlan: $on_trunk_replies replies crossed the director's trunk (capture control: $control echo requests on VLAN $VLAN_OTHER)"
    fi
    # `  tx  N packets  M bytes` and `  198.18.200.11  eth0.200  1  MAC ...` in drlb stats.
    tx=$(awk '$1 == "tx" && $3 == "packets" { print $2 }' "$WORK/vlan-counters")
    if [ "${tx:-0}" -ge $((VLAN_FRAMES_PER_REQUEST * VLAN_REQUESTS)) ]; then
        check ok "vlan: $tx frames out of the same trunk with XDP_TX"
    else
        check FAIL "vlan: XDP_TX counted '${tx}' frames: $(cat "$WORK/vlan-counters")"
    fi
    for rs in $VLAN_SERVERS; do
        via=$(awk -v a="$(vlan_backend_ip "$rs")" '$1 == a { print $2 }' "$WORK/vlan-counters")
        if [ "$via" = "eth0.$VLAN_BACKEND" ]; then check ok "vlan: $rs is reached via eth0.$VLAN_BACKEND"; else
            check FAIL "vlan: $rs is reached via '$via', not eth0.$VLAN_BACKEND: $(cat "$WORK/vlan-counters")"
        fi
    done
    echo "VMTEST-ROW vlan drlb ($xdp on the trunk's parent) http:$spread | retagged for VLAN $VLAN_BACKEND $retagged | replies direct $direct/$replies, on the trunk $on_trunk_replies | XDP_TX $tx"
    echo "drlb stats:"
    cat "$WORK/vlan-counters"
    topology_down
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
wanted vlan && vlan
echo "== IPVS beside drlb on $(uname -r) (link director | per real server HTTP/UDP answered | replies | ARP | per real server packets the director counted)"
echo "$ROWS" | sed 1d
exit $FAILED
