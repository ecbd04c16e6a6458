#!/usr/bin/env bash
# Tunes a kdp gatherer host: isolates the shard CPUs, moves interrupts off them, sets the CPU
# frequency governor, transparent huge pages, and the socket and VM sysctls. Every setting
# below carries the reason it is there.
#
# Dry run by default: it prints what it would do and changes nothing. --apply (as root) does
# it. Written for Debian/Ubuntu hosts (grub drop-ins in /etc/default/grub.d, update-grub).
#
# usage: tune-host.sh [--apply] [--mode cmdline|cpusets] [--no-siblings] SHARD_CPUS
#   SHARD_CPUS     the gatherer's shard_cpus as a CPU list: "2-5" or "2,3,4,5"
#   --mode cmdline (default) isolate with kernel parameters (isolcpus, nohz_full, rcu_nocbs,
#                  irqaffinity): the strongest isolation, needs a reboot. Without --apply it
#                  only prints the grub line; with --apply it writes a grub drop-in and runs
#                  update-grub, and you reboot when ready.
#   --mode cpusets the runtime alternative, no reboot: cgroup cpusets through systemd
#                  (AllowedCPUs= on system.slice, user.slice and init.scope = housekeeping
#                  CPUs; kdp.slice keeps every CPU). Kernel threads, timers and RCU callbacks
#                  still run on the shard CPUs, so jitter is higher than with cmdline.
#   --no-siblings  isolate only the listed CPUs, not their hyper-thread siblings
#   --apply        make the changes (needs root)
#
# Example: tune-host.sh 2-5            # show the plan for shards on CPUs 2-5
#          sudo tune-host.sh --apply 2-5
set -euo pipefail

apply=0
mode=cmdline
siblings=1
shard_arg=""

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

die() {
    echo "tune-host.sh: $*" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
    --apply) apply=1 ;;
    --mode)
        [ $# -ge 2 ] || die "--mode needs cmdline or cpusets"
        mode="$2"
        shift
        ;;
    --mode=*) mode="${1#--mode=}" ;;
    --no-siblings) siblings=0 ;;
    -h | --help)
        usage
        exit 0
        ;;
    -*) die "unknown option $1 (see --help)" ;;
    *)
        [ -z "$shard_arg" ] || die "give one SHARD_CPUS list, got '$shard_arg' and '$1'"
        shard_arg="$1"
        ;;
    esac
    shift
done
[ -n "$shard_arg" ] || die "missing SHARD_CPUS (e.g. 2-5); see --help"
case "$mode" in
cmdline | cpusets) ;;
*) die "--mode must be cmdline or cpusets, got '$mode'" ;;
esac
if [ "$apply" -eq 1 ] && [ "$(id -u)" -ne 0 ]; then
    die "--apply needs root"
fi

# ---- CPU lists ------------------------------------------------------------------------------

# Expands a CPU list ("0-2,5") into one number per line.
expand_list() {
    local part lo hi
    local IFS=,
    for part in $1; do
        case "$part" in
        *-*)
            lo="${part%-*}"
            hi="${part#*-}"
            ;;
        *)
            lo="$part"
            hi="$part"
            ;;
        esac
        case "$lo$hi" in
        '' | *[!0-9]*) die "'$1' is not a CPU list (like 2-5 or 2,3,4,5)" ;;
        esac
        [ "$lo" -le "$hi" ] || die "'$part' runs backwards"
        seq "$lo" "$hi"
    done
}

# Joins numbers (one per line on stdin) into a compact sorted list: "0-2,5".
compact_list() {
    sort -n -u | awk '
        NR == 1 { lo = $1; hi = $1; next }
        $1 == hi + 1 { hi = $1; next }
        { printf "%s%s", sep, (lo == hi ? lo : lo "-" hi); sep = ","; lo = $1; hi = $1 }
        END { if (NR) printf "%s%s", sep, (lo == hi ? lo : lo "-" hi); print "" }'
}

# The hexadecimal mask of a CPU list, in the comma-separated 32-bit words /proc/irq uses
# (plain bash arithmetic: Debian's default awk has no bit operations).
hex_mask() {
    local -a words=()
    local cpu w i top=0 out=""
    while read -r cpu; do
        w=$((cpu / 32))
        words[w]=$((${words[w]:-0} | (1 << (cpu % 32))))
        if [ "$w" -gt "$top" ]; then top="$w"; fi
    done < <(expand_list "$1")
    for ((i = top; i >= 0; i--)); do
        out+="$(printf '%08x' "${words[i]:-0}")"
        if [ "$i" -gt 0 ]; then out+=","; fi
    done
    echo "$out"
}

online_list="$(cat /sys/devices/system/cpu/online)"
# Validated here, in this shell: a `die` inside the process substitutions below would only
# end the subshell.
expand_list "$shard_arg" >/dev/null
mapfile -t online < <(expand_list "$online_list")
mapfile -t shards < <(expand_list "$shard_arg")

for cpu in "${shards[@]}"; do
    printf '%s\n' "${online[@]}" | grep -qx "$cpu" || die "CPU $cpu is not online (online: $online_list)"
done

isolated_list="$(printf '%s\n' "${shards[@]}" | compact_list)"
if [ "$siblings" -eq 1 ]; then
    # A hyper-thread sibling shares the core's execution units and L1/L2 with the shard: any
    # thread scheduled there slows the shard. Isolating the sibling too keeps it idle.
    sibling_cpus="$(for cpu in "${shards[@]}"; do
        f="/sys/devices/system/cpu/cpu$cpu/topology/thread_siblings_list"
        if [ -r "$f" ]; then expand_list "$(cat "$f")"; else echo "$cpu"; fi
    done | compact_list)"
    isolated_list="$(expand_list "$isolated_list,$sibling_cpus" | compact_list)"
fi
housekeeping_list="$(printf '%s\n' "${online[@]}" | grep -vxF -f <(expand_list "$isolated_list") | compact_list || true)"
[ -n "$housekeeping_list" ] || die "isolating $isolated_list leaves no CPU for the kernel, IRQs, the writer and PostgreSQL"

# ---- doing things, or saying what would be done ---------------------------------------------

say() { printf '\n== %s\n' "$*"; }
why() { printf '   why: %s\n' "$*"; }

# run CMD...: runs it with --apply, prints it otherwise.
run() {
    if [ "$apply" -eq 1 ]; then
        printf '   + %s\n' "$*"
        "$@"
    else
        printf '   would run: %s\n' "$*"
    fi
}

# write_file PATH: writes stdin to PATH with --apply, prints it otherwise.
write_file() {
    local path="$1" content
    content="$(cat)"
    if [ "$apply" -eq 1 ]; then
        mkdir -p "$(dirname "$path")"
        printf '%s\n' "$content" >"$path"
        printf '   wrote %s\n' "$path"
    else
        printf '   would write %s:\n' "$path"
        printf '%s\n' "$content" | sed 's/^/     | /'
    fi
}

# set_sysfs PATH VALUE: writes a kernel tunable with --apply (a refusal is reported, not fatal).
set_sysfs() {
    if [ "$apply" -eq 1 ]; then
        if printf '%s\n' "$2" 2>/dev/null >"$1"; then
            printf '   %s = %s\n' "$1" "$2"
        else
            printf '   %s: refused by the kernel (left as is)\n' "$1"
            return 1
        fi
    else
        printf '   would set %s = %s\n' "$1" "$2"
    fi
}

echo "kdp host tuning ($([ "$apply" -eq 1 ] && echo APPLY || echo dry run), mode $mode)"
echo "   online CPUs:       $online_list"
echo "   shard CPUs:        $(printf '%s\n' "${shards[@]}" | compact_list)"
echo "   isolated CPUs:     $isolated_list$([ "$siblings" -eq 1 ] && echo ' (shards + hyper-thread siblings)')"
echo "   housekeeping CPUs: $housekeeping_list (kernel, IRQs, gatherer writer, PostgreSQL)"

# ---- 1. CPU isolation -----------------------------------------------------------------------

if [ "$mode" = cmdline ]; then
    say "CPU isolation via the kernel command line"
    why "isolcpus=domain keeps the scheduler from placing any other task on the shard CPUs
        (the gatherer pins its shard threads there itself); the nohz flag and nohz_full stop the
        periodic tick on a CPU running a single task, removing a 1-4 ms interruption;
        managed_irq keeps driver-managed queue interrupts off them where the driver allows."
    why "rcu_nocbs moves RCU callback processing off the shard CPUs to housekeeping kthreads."
    why "irqaffinity sets the default interrupt affinity at boot to the housekeeping CPUs."
    why "transparent_hugepage=madvise makes the THP setting (section 4) survive reboots."
    params="isolcpus=nohz,domain,managed_irq,$isolated_list nohz_full=$isolated_list rcu_nocbs=$isolated_list irqaffinity=$housekeeping_list transparent_hugepage=madvise"
    echo "   kernel parameters: $params"
    if grep -qw "nohz_full=$isolated_list" /proc/cmdline; then
        echo "   the running kernel already has nohz_full=$isolated_list"
    fi
    # A drop-in, so the distribution's /etc/default/grub (and cloud-image drop-ins) stay
    # untouched and the change is one file to review or delete.
    write_file /etc/default/grub.d/60-kdp-isolation.cfg <<EOF
# Written by kdp deploy/tune-host.sh for shard CPUs $shard_arg. Delete and run update-grub to undo.
GRUB_CMDLINE_LINUX="\$GRUB_CMDLINE_LINUX $params"
EOF
    if command -v update-grub >/dev/null 2>&1; then
        run update-grub
    else
        echo "   update-grub not found: regenerate the boot configuration your way (grubby, grub2-mkconfig)"
    fi
    echo "   then reboot for the isolation to take effect."
else
    say "CPU isolation via cgroup cpusets (systemd AllowedCPUs=)"
    why "everything outside kdp.slice (system services, logins, PID 1) is confined to the
        housekeeping CPUs, so the shard CPUs only run the gatherer's pinned shard threads
        (and kernel threads, which cpusets cannot move). No reboot needed."
    why "kdp.slice keeps every online CPU: the shards pin themselves with sched_setaffinity,
        which fails for a CPU outside the cgroup's AllowedCPUs=."
    run systemctl set-property system.slice "AllowedCPUs=$housekeeping_list"
    run systemctl set-property user.slice "AllowedCPUs=$housekeeping_list"
    run systemctl set-property init.scope "AllowedCPUs=$housekeeping_list"
    run systemctl set-property kdp.slice "AllowedCPUs=$online_list"
fi

# ---- 2. Interrupts --------------------------------------------------------------------------

say "IRQ affinity away from the shard CPUs"
why "a network or disk interrupt on a shard CPU preempts the shard mid-frame; with all IRQs
        on the housekeeping CPUs the packets are processed there and the shard only reads
        its socket."
irq_ok=0
irq_refused=0
for f in /proc/irq/[0-9]*/smp_affinity_list; do
    [ -e "$f" ] || continue
    if [ "$apply" -eq 1 ]; then
        if printf '%s\n' "$housekeeping_list" 2>/dev/null >"$f"; then
            irq_ok=$((irq_ok + 1))
        else
            irq_refused=$((irq_refused + 1))
        fi
    else
        irq_ok=$((irq_ok + 1))
    fi
done
if [ "$apply" -eq 1 ]; then
    echo "   moved $irq_ok IRQs to $housekeeping_list; $irq_refused refused (kernel-managed or per-CPU; managed_irq covers those)"
else
    echo "   would write $housekeeping_list to $irq_ok /proc/irq/*/smp_affinity_list files"
fi
set_sysfs /proc/irq/default_smp_affinity "$(hex_mask "$housekeeping_list")" || true
if [ -f /etc/default/irqbalance ] || command -v irqbalance >/dev/null 2>&1; then
    why "irqbalance would move interrupts back onto the shard CPUs; banning them (irqbalance
        1.8+ reads IRQBALANCE_BANNED_CPULIST) keeps it balancing among housekeeping CPUs only."
    if [ "$apply" -eq 1 ]; then
        touch /etc/default/irqbalance
        sed -i '/^IRQBALANCE_BANNED_CPULIST=/d' /etc/default/irqbalance
        printf 'IRQBALANCE_BANNED_CPULIST=%s\n' "$isolated_list" >>/etc/default/irqbalance
        echo "   IRQBALANCE_BANNED_CPULIST=$isolated_list in /etc/default/irqbalance"
        run systemctl try-restart irqbalance.service
    else
        echo "   would set IRQBALANCE_BANNED_CPULIST=$isolated_list in /etc/default/irqbalance and restart irqbalance"
    fi
else
    echo "   irqbalance not installed: the affinities above stay as written (until reboot; irqaffinity= covers boot)"
fi

# ---- 3. CPU frequency -----------------------------------------------------------------------

say "CPU frequency governor: performance"
why "a shard idles between frames; an on-demand governor lowers the clock then and the next
        burst runs slow while it ramps up. performance keeps the clock at its maximum."
governors=(/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor)
if [ -e "${governors[0]}" ]; then
    for g in "${governors[@]}"; do
        set_sysfs "$g" performance || true
    done
    why "(persisting it across reboots: the cpufrequtils or tuned package; this script sets the running value)"
else
    echo "   no cpufreq driver here (usual on virtualised EC2 instances, where the hypervisor
   controls frequency): nothing to set."
fi

# ---- 4. Transparent huge pages --------------------------------------------------------------

say "Transparent huge pages: madvise"
why "with THP 'always', khugepaged compaction and huge-page faults stall processes for
        milliseconds; PostgreSQL (the local gatherer database) recommends against it and uses
        explicit huge pages (huge_pages=try) instead. madvise leaves THP only to programs that
        ask for it."
thp=/sys/kernel/mm/transparent_hugepage
if [ -d "$thp" ]; then
    set_sysfs "$thp/enabled" madvise || true
    set_sysfs "$thp/defrag" madvise || true
else
    echo "   $thp not present: THP is not built into this kernel, nothing to do."
fi
why "kept across reboots by a tmpfiles.d rule (and transparent_hugepage= in cmdline mode)."
write_file /etc/tmpfiles.d/60-kdp-thp.conf <<'EOF'
# Written by kdp deploy/tune-host.sh: THP only for programs that madvise() (PostgreSQL host).
w /sys/kernel/mm/transparent_hugepage/enabled - - - - madvise
w /sys/kernel/mm/transparent_hugepage/defrag - - - - madvise
EOF

# ---- 5. Sysctls -----------------------------------------------------------------------------

say "Kernel network and VM settings (/etc/sysctl.d/60-kdp.conf)"
write_file /etc/sysctl.d/60-kdp.conf <<'EOF'
# Written by kdp deploy/tune-host.sh. Each value with its reason.

# Accept backlog cap for listeners (the local PostgreSQL, the /metrics server): a dedup or
# Prometheus reconnecting in a burst is not refused. 4096 is the default since Linux 5.4;
# set explicitly for older kernels, where it was 128.
net.core.somaxconn = 4096

# Largest socket buffers a program may request with SO_RCVBUF/SO_SNDBUF: 16 MiB.
net.core.rmem_max = 16777216
net.core.wmem_max = 16777216

# TCP autotuning (min, default, max bytes per socket). Hundreds of WebSocket connections are
# mostly quiet, so the default stays small (128 KiB receive), but after a reconnect a
# connection receives the snapshots of up to 2,000 markets at once: a 16 MiB maximum lets the
# window grow so that burst is not limited by round trips. Memory is bounded overall by
# net.ipv4.tcp_mem (left at the kernel's default, sized from RAM).
net.ipv4.tcp_rmem = 4096 131072 16777216
net.ipv4.tcp_wmem = 4096 65536 16777216

# Packets queued per CPU between the interrupt and protocol processing. With every IRQ on the
# few housekeeping CPUs, a resync burst on all connections can overflow the default 1000.
net.core.netdev_max_backlog = 16384

# Swap out only under real memory pressure: a swapped-out ring or writer buffer turns into
# millisecond stalls on the hot path. 1, not 0: with 0, recent kernels avoid swap so hard
# that the OOM killer can come first on a host that has swap.
vm.swappiness = 1
EOF
run sysctl -p /etc/sysctl.d/60-kdp.conf

# ---- what to put in the kdp configuration ---------------------------------------------------

say "Matching kdp settings"
echo "   gatherer config:     shard_cpus = [$(printf '%s\n' "${shards[@]}" | sort -n | paste -sd, - | sed 's/,/, /g')]"
echo "   unit drop-in:        systemctl edit kdp-gatherer@NAME  ->  [Service] CPUAffinity=<housekeeping CPUs for the"
echo "                        writer, e.g. one core of $housekeeping_list not used by PostgreSQL or IRQs>"
echo "   memlock:             LimitMEMLOCK=64M in the unit (1 MiB of io_uring memory per shard)"
if [ "$apply" -eq 0 ]; then
    echo
    echo "dry run: nothing was changed. Re-run with --apply as root to make these changes."
fi
