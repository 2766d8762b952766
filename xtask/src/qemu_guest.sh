#!/bin/busybox sh
# /init of the QEMU tier's guest (see xtask/src/qemu.rs): checks the release p2p-node on the
# guest's kernel and prints one `P2PCC-QEMU <check> ok|FAIL|unavailable ...` marker per check,
# then `P2PCC-QEMU DONE`, and powers off. The host decides pass/fail from the markers alone.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mkdir -p /sys/fs/bpf /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
ip link set lo up

N=/p2p-node
mark() { echo "P2PCC-QEMU $*"; }
# Every wait is bounded: at most $1 tries of 0.5 s.
wait_for() { tries=$1; shift; while [ "$tries" -gt 0 ]; do "$@" && return 0; tries=$((tries - 1)); sleep 0.5; done; return 1; }
addr_of() { sed -n 's|.*listening on \(/ip4/127.0.0.1/tcp/[0-9]*/p2p/[A-Za-z0-9]*\).*|\1|p' "$1" | head -n 1; }
has_addr() { [ -n "$(addr_of "$1")" ]; }
# The CWND and SRTT columns of `p2p-node peers` (found by their headers: the table grows) for
# the first peer row on algorithm $2.
peer_row() { $N peers --node "$1" 2>/dev/null | awk -v cc="$2" 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next } $2 == cc { print $(col["CWND"]), $(col["SRTT(ms)"]); exit }'; }
probed() { row=$(peer_row "$1" "$2"); case "$row" in ""|-*|*" -") return 1;; esac; [ "${row%% *}" -gt 0 ]; }

# The nodes' own logs, for the host's failure report (their lines carry no marker, so they never
# decide pass/fail): the last 40 lines of each, prefixed with the file's name.
dump_logs() { for f in /tmp/a.log /tmp/b.log /tmp/c.log /tmp/d.log; do [ -f "$f" ] && tail -n 40 "$f" | sed "s|^|guest ${f#/tmp/}: |"; done; }
# A guest that hangs still reports: the host kills QEMU at GUEST_TIMEOUT, this fires a minute
# earlier (xtask/src/qemu.rs writes GUEST_WATCHDOG's seconds in place of the placeholder).
( sleep @WATCHDOG_SECS@; dump_logs; mark "WATCHDOG FAIL the guest ran @WATCHDOG_SECS@ s without finishing"; poweroff -f ) &

mark "KERNEL $(uname -r)"
mark "AVAILABLE $(cat /proc/sys/net/ipv4/tcp_available_congestion_control)"

# Two nodes on the kernel's own algorithm; node A must load the eBPF probes.
$N run --listen /ip4/127.0.0.1/tcp/4001 --http 127.0.0.1:9501 --cc cubic --require-ebpf >/tmp/a.log 2>&1 &
A_PID=$!
if ! wait_for 40 has_addr /tmp/a.log; then
    mark "PROBES FAIL node A did not start: $(tail -n 3 /tmp/a.log | tr '\n' ' ')"
    mark DONE
    poweroff -f
fi
A=$(addr_of /tmp/a.log)
A_ID=${A##*/}
$N run --listen /ip4/127.0.0.1/tcp/4002 --http 127.0.0.1:9502 --cc cubic --peer "$A" >/tmp/b.log 2>&1 &
B_PID=$!
wait_for 40 sh -c "$N peers --node http://127.0.0.1:9502 2>/dev/null | grep -q $A_ID"

# 1. The probes report per-peer cwnd and RTT for a transfer between the two nodes.
$N perf "$A_ID" --upload 20000000 --node http://127.0.0.1:9502 >/tmp/perf1.log 2>&1
if wait_for 10 probed http://127.0.0.1:9502 cubic; then
    mark "PROBES ok cwnd,srtt(ms)=$(peer_row http://127.0.0.1:9502 cubic | tr ' ' ,) $(tr '\n' ' ' </tmp/perf1.log)"
else
    mark "PROBES FAIL $(tr '\n' ' ' </tmp/perf1.log) peers: $($N peers --node http://127.0.0.1:9502 2>&1 | tr '\n' ' ')"
fi

# 2. What node A says this kernel lets it do (/api/node `ebpf.features`): every probe attached
#    (tcp_retransmit_skb in the form 6.1's two-argument tracepoint takes), the collector's
#    refresh (iter_tcp) loaded, and each feature this kernel lacks (struct_ops links: from 6.4)
#    reported with its reason.
timeout 10 wget -qO /tmp/node.json http://127.0.0.1:9501/api/node
tr '{' '\n' </tmp/node.json | grep '"kind":' >/tmp/features
missing=""
for tp in tcp_probe tcp_retransmit_skb tcp_cong_state_set tcp_destroy_sock iter_tcp; do
    grep -q "\"name\":\"$tp\",\"available\":true" /tmp/features || missing="$missing $tp"
done
unexplained=$(grep '"available":false' /tmp/features | grep -v '"unavailable":"[^"]')
form=$(sed -n 's/.*"name":"tcp_retransmit_skb","available":true,"detail":"program \([a-z_0-9]*\)".*/\1/p' /tmp/features)
lacking=$(sed -n 's/.*"name":"\([^"]*\)","available":false,"unavailable":"\([^"]*\)".*/\1 (\2)/p' /tmp/features | tr '\n' ';')
# The refresh's walk ran in node A's latest collection (the metric is absent when it failed).
timeout 10 wget -qO /tmp/metrics.txt http://127.0.0.1:9501/metrics
walk=$(sed -n 's/^p2pcc_telemetry_refresh_duration_seconds \(.*\)/\1/p' /tmp/metrics.txt)
if [ -z "$missing" ] && [ -z "$unexplained" ] && [ -n "$form" ] && [ -n "$walk" ]; then
    mark "FEATURES ok tcp_retransmit_skb=$form; refresh walk ${walk}s; unavailable: ${lacking:-none}"
else
    mark "FEATURES FAIL not available:$missing; without a reason: $unexplained; refresh walk: '${walk}'; $(head -c 800 /tmp/node.json)"
fi

# 3. Switching among the kernel's algorithms moves the node's connections.
switch_ok=1
for cc in reno cubic; do
    $N cc set "$cc" --node http://127.0.0.1:9502 >/tmp/switch.log 2>&1 || switch_ok=0
    $N perf "$A_ID" --upload 2000000 --node http://127.0.0.1:9502 >/dev/null 2>&1
    wait_for 10 probed http://127.0.0.1:9502 "$cc" || switch_ok=0
done
if [ $switch_ok = 1 ]; then mark "SWITCH ok reno,cubic"; else mark "SWITCH FAIL $(tr '\n' ' ' </tmp/switch.log)"; fi

# 4. bbr-p2p: `cc list` says whether this kernel can run it; if it can, it carries a transfer;
#    if not, `--cc bbr-p2p` fails with the reason `cc list` gave.
$N cc list --node http://127.0.0.1:9502 >/tmp/list.log 2>&1
mark "CC-LIST $(tr '\n' '|' </tmp/list.log)"
if $N cc set bbr-p2p --node http://127.0.0.1:9502 >/tmp/bbr.log 2>&1; then
    $N perf "$A_ID" --upload 20000000 --node http://127.0.0.1:9502 >/tmp/perf2.log 2>&1
    if wait_for 10 probed http://127.0.0.1:9502 bbr-p2p; then
        mark "BBR ok cwnd,srtt(ms)=$(peer_row http://127.0.0.1:9502 bbr-p2p | tr ' ' ,) $(tr '\n' ' ' </tmp/perf2.log)"
    else
        mark "BBR FAIL registered but carried nothing: $(tr '\n' ' ' </tmp/perf2.log)"
    fi
    # 4b. Without struct_ops links (< 6.4) the registration outlives its process unless the node
    #     deletes it: node B, SIGTERM'd, must exit by itself within the 5 s our stoppers give
    #     and leave bbr_p2p unregistered.
    kill -TERM "$B_PID"
    if ! wait_for 10 sh -c "! kill -0 $B_PID 2>/dev/null"; then
        mark "STOP FAIL node B still running 5 s after SIGTERM: $(tail -n 3 /tmp/b.log | tr '\n' ' ')"
    elif grep -qw bbr_p2p /proc/sys/net/ipv4/tcp_available_congestion_control; then
        mark "STOP FAIL bbr_p2p still registered after node B exited: $(tail -n 3 /tmp/b.log | tr '\n' ' ')"
    else
        mark "STOP ok bbr_p2p unregistered by node B on SIGTERM"
    fi
else
    # `cc list` is JSON: {"unavailable": {"bbr-p2p": "<sentence>"}}; compare its first 100
    # characters (the sentence may continue with an escaped verifier log).
    reason=$(sed -n 's/.*"unavailable":{"bbr-p2p":"\([^"]*\)".*/\1/p' /tmp/list.log | cut -c1-100)
    $N run --listen /ip4/127.0.0.1/tcp/4003 --http 127.0.0.1:9503 --cc bbr-p2p >/tmp/c.log 2>&1 &
    C_PID=$!
    wait_for 40 sh -c "! kill -0 $C_PID 2>/dev/null"
    kill "$C_PID" 2>/dev/null
    if [ -n "$reason" ] && grep -qF "$reason" /tmp/c.log && grep -qF "$reason" /tmp/bbr.log; then
        mark "BBR unavailable: $reason"
    else
        mark "BBR FAIL cc list: '$reason'; cc set: $(tr '\n' ' ' </tmp/bbr.log); --cc: $(tr '\n' ' ' </tmp/c.log)"
    fi
fi

# 5. A cgroup v2 memory.max is the node's memory limit (as the v1 kernel test `limits::a_memory_
#    limit_on_the_nodes_cgroup_is_reflected_in_its_limits` checks on the host): node D runs in a
#    child cgroup with memory.max = 256 MiB (its pid written to cgroup.procs before the exec);
#    its /api/node must report that limit, name the file, and derive fewer connections and
#    streams than node A (no cgroup limit, /tmp/node.json from check 2) and the defaults.
LIMIT=268435456
CG=/sys/fs/cgroup/p2pcc-mem
# The `limits` object's memory budget and system scope, in the order /api/node serialises them.
limits_of() { grep -o '"limits":{"memory":{"source":[^,]*,"available_bytes":[0-9]*,"limit_bytes":[0-9]*},"system":{[^}]*}' "$1" | head -n 1; }
field() { echo "$2" | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }
source_of() { echo "$1" | sed -n 's/.*"memory":{"source":\([^,]*\),.*/\1/p'; }
if mkdir -p /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup &&
    echo +memory >/sys/fs/cgroup/cgroup.subtree_control && mkdir "$CG" &&
    echo "$LIMIT" >"$CG/memory.max"; then
    sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$CG" \
        $N run --listen /ip4/127.0.0.1/tcp/4004 --http 127.0.0.1:9504 --cc cubic >/tmp/d.log 2>&1 &
    D_PID=$!
    # The node logs its libp2p address before its HTTP API is bound: poll the API itself (one
    # CI run fetched nothing, the API not yet up, under the guest's software emulation).
    wait_for 40 has_addr /tmp/d.log
    wait_for 40 timeout 10 wget -qO /tmp/limited.json http://127.0.0.1:9504/api/node
    in_cg=$(cat "/proc/$D_PID/cgroup" 2>/dev/null)
    limited=$(limits_of /tmp/limited.json)
    free=$(limits_of /tmp/node.json)
    source=$(source_of "$limited")
    avail=$(field available_bytes "$limited")
    budget=$(field limit_bytes "$limited")
    conns_in=$(field conns_inbound "$limited")
    conns_out=$(field conns_outbound "$limited")
    streams_in=$(field streams_inbound "$limited")
    free_source=$(source_of "$free")
    free_avail=$(field available_bytes "$free")
    free_streams_in=$(field streams_inbound "$free")
    got="cgroup: $in_cg; source $source, available $avail, budget $budget, conns in/out $conns_in/$conns_out, streams in $streams_in (node A: source $free_source, available $free_avail, streams in $free_streams_in)"
    expected=$LIMIT
    if [ "$in_cg" = "0::/p2pcc-mem" ] && [ "$avail" = "$expected" ] &&
        [ "$source" = "{\"cgroup_v2\":\"$CG/memory.max\"}" ] &&
        [ "${budget:-0}" -gt 0 ] && [ "$budget" -lt "$LIMIT" ] &&
        [ "$free_source" = '"host"' ] && [ "${free_avail:-0}" -gt "$LIMIT" ] &&
        [ "${conns_in:-1024}" -lt 1024 ] && [ "${conns_out:-512}" -lt 512 ] &&
        [ -n "$free_streams_in" ] && [ "${streams_in:-$free_streams_in}" -lt "$free_streams_in" ]; then
        mark "CGROUP2 ok memory.max=$LIMIT; $got"
    else
        mark "CGROUP2 FAIL expected memory.max $expected in cgroup 0::/p2pcc-mem; $got; /api/node: $(head -c 600 /tmp/limited.json); log: $(tail -n 3 /tmp/d.log | tr '\n' ' ')"
    fi
    kill "$D_PID" 2>/dev/null
else
    mark "CGROUP2 FAIL no memory controller: controllers '$(cat /sys/fs/cgroup/cgroup.controllers 2>&1)'"
fi

kill "$A_PID" "$B_PID" 2>/dev/null
dump_logs
mark DONE
poweroff -f
