#!/usr/bin/env bash
# Checks everything in deploy/ with the real tools, and says which checks were skipped and why.
# Exit status 1 if any check failed; skipped checks do not fail the run.
#
#   deploy/check.sh
#
# Tools (Debian/Ubuntu packages): systemd (systemd-analyze, systemd-sysusers), shellcheck,
# prometheus (promtool), prometheus-blackbox-exporter, python3 (3.11+ for tomllib); terraform
# from HashiCorp. Nothing is installed or changed on this machine: the unit check runs in a
# throwaway root with a stub /usr/local/bin/kdp, removed at exit.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$here" || exit 2

passed=()
failed=()
skipped=()
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

pass() {
    passed+=("$1")
    printf 'PASS  %s\n' "$1"
}
fail() {
    failed+=("$1")
    printf 'FAIL  %s\n' "$1"
}
skip() {
    skipped+=("$1: $2")
    printf 'SKIP  %s (%s)\n' "$1" "$2"
}
have() { command -v "$1" >/dev/null 2>&1; }

# check NAME CMD...: runs CMD; passes on status 0 with no output on stderr (systemd-analyze
# reports unknown keys as warnings with status 0, so any stderr line counts as a failure).
check() {
    local name="$1" out err
    shift
    out="$scratch/out"
    err="$scratch/err"
    if "$@" >"$out" 2>"$err" && [ ! -s "$err" ]; then
        pass "$name"
    else
        fail "$name"
        sed 's/^/      /' "$out" "$err"
    fi
}

# check_status NAME CMD...: like check, but only the exit status counts (for tools that log
# informational lines on stderr).
check_status() {
    local name="$1" out
    shift
    out="$scratch/out"
    if "$@" >"$out" 2>&1; then
        pass "$name"
    else
        fail "$name"
        sed 's/^/      /' "$out"
    fi
}

# ---- systemd --------------------------------------------------------------------------------

if have systemd-analyze; then
    root="$scratch/root"
    if [ -d /usr/lib/systemd/system ]; then
        # systemd-analyze --root resolves units and ExecStart= inside the root: give it the
        # distribution's units (for targets such as network-online.target) and a stub kdp.
        mkdir -p "$root/usr/lib/systemd" "$root/etc/systemd/system" "$root/usr/local/bin"
        cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
        printf '#!/bin/sh\nexit 0\n' >"$root/usr/local/bin/kdp"
        chmod 0755 "$root/usr/local/bin/kdp"
        cp systemd/*.service systemd/*.slice "$root/etc/systemd/system/"
        check "systemd-analyze verify kdp-gatherer@a.service kdp-dedup.service kdp.slice" \
            systemd-analyze verify --root="$root" --man=no \
            kdp-gatherer@a.service kdp-dedup.service kdp.slice
    else
        skip "systemd-analyze verify" "no /usr/lib/systemd/system to take the standard units from"
    fi
else
    skip "systemd-analyze verify" "systemd-analyze not installed (apt-get install systemd)"
fi

if have systemd-sysusers; then
    mkdir -p "$scratch/sysusers/etc"
    check_status "systemd-sysusers --dry-run systemd/kdp-sysusers.conf" \
        systemd-sysusers --root="$scratch/sysusers" --dry-run "$here/systemd/kdp-sysusers.conf"
else
    skip "systemd-sysusers --dry-run" "systemd-sysusers not installed (apt-get install systemd)"
fi

# ---- shell ----------------------------------------------------------------------------------

if have shellcheck; then
    check "shellcheck tune-host.sh check.sh" shellcheck tune-host.sh check.sh
else
    skip "shellcheck" "shellcheck not installed (apt-get install shellcheck)"
fi

last_cpu="$(tr ',' '\n' </sys/devices/system/cpu/online 2>/dev/null | tail -n1 | sed 's/.*-//')"
if [ -n "$last_cpu" ] && [ "$last_cpu" -ge 1 ]; then
    # Dry run (the default): reads /sys and /proc, changes nothing.
    check_status "tune-host.sh $last_cpu (dry run)" ./tune-host.sh "$last_cpu"
else
    skip "tune-host.sh dry run" "needs at least two online CPUs (one must stay for housekeeping)"
fi

# ---- configs --------------------------------------------------------------------------------

if have python3 && python3 -c 'import tomllib' 2>/dev/null; then
    check "config/*.toml parse; gatherer keys are GathererConfig fields" python3 - "$repo/ingest/src/gatherer/config.rs" config <<'EOF'
import pathlib, re, sys, tomllib

source = pathlib.Path(sys.argv[1]).read_text()
body = source.split("pub struct GathererConfig {", 1)[1].split("\n}", 1)[0]
fields = set(re.findall(r"^\s*pub (\w+):", body, re.M))
problems = []
for path in sorted(pathlib.Path(sys.argv[2]).glob("*.toml")):
    config = tomllib.loads(path.read_text())
    if not path.name.startswith("gatherer-"):
        continue
    unknown = set(config) - fields
    if unknown:
        problems.append(f"{path}: keys not in GathererConfig: {sorted(unknown)}")
    if "ws_url" not in config:
        problems.append(f"{path}: missing ws_url")
    if not config.get("markets") and "rest_url" not in config:
        problems.append(f"{path}: no markets and no rest_url (nothing to capture)")
    cpus = config.get("shard_cpus", [])
    if len(set(cpus)) != len(cpus):
        problems.append(f"{path}: shard_cpus repeats a CPU")
    if "shard_cpus" in config and "shard_count" in config:
        problems.append(f"{path}: shard_cpus and shard_count together")
if not fields:
    problems.append("could not read the GathererConfig fields")
for p in problems:
    print(p, file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
else
    skip "config TOML check" "python3 3.11+ (tomllib) not available"
fi

# ---- terraform ------------------------------------------------------------------------------

if have terraform; then
    check_status "terraform fmt -check -recursive terraform" terraform fmt -check -recursive -diff terraform
    # validate needs the AWS provider, downloaded by init from registry.terraform.io.
    tf="$scratch/tf"
    mkdir -p "$tf"
    cp terraform/*.tf "$tf/"
    if (cd "$tf" && timeout 90 terraform init -backend=false -input=false -no-color) >"$scratch/tf-init" 2>&1; then
        check_status "terraform validate" bash -c "cd '$tf' && terraform validate -no-color"
    else
        skip "terraform validate" "terraform init could not download the AWS provider ($(grep -m1 -o 'could not connect to [^:]*' "$scratch/tf-init" || echo 'see terraform init'))"
    fi
else
    skip "terraform fmt -check" "terraform not installed (HashiCorp's release servers are not reachable here; the files are formatted by hand in terraform fmt style)"
    skip "terraform validate" "terraform not installed"
fi

# ---- prometheus -----------------------------------------------------------------------------

if have promtool; then
    check_status "promtool check rules prometheus/alerts.yml" promtool check rules prometheus/alerts.yml
    check_status "promtool test rules prometheus/alerts_test.yml" promtool test rules prometheus/alerts_test.yml
    check_status "promtool check config prometheus/prometheus.yml" promtool check config prometheus/prometheus.yml
else
    skip "promtool check/test rules, check config" "promtool not installed (apt-get install prometheus)"
fi

if have prometheus-blackbox-exporter; then
    check_status "blackbox exporter --config.check prometheus/blackbox.yml" \
        prometheus-blackbox-exporter --config.file=prometheus/blackbox.yml --config.check
elif have blackbox_exporter; then
    check_status "blackbox_exporter --config.check prometheus/blackbox.yml" \
        blackbox_exporter --config.file=prometheus/blackbox.yml --config.check
else
    skip "blackbox exporter config check" "blackbox exporter not installed (apt-get install prometheus-blackbox-exporter)"
fi

# ---- grafana --------------------------------------------------------------------------------

if have python3; then
    check "python3 -m json.tool grafana/kdp-pipeline.json" python3 -m json.tool grafana/kdp-pipeline.json
    if have promtool; then
        # Every panel query must be valid PromQL: wrap them as recording rules (Grafana's
        # $__rate_interval and $gatherer replaced by plain values) and let promtool parse them.
        python3 - grafana/kdp-pipeline.json >"$scratch/dashboard-rules.yml" <<'EOF'
import json, sys
dashboard = json.load(open(sys.argv[1]))
print("groups:\n  - name: dashboard\n    rules:")
n = 0
for panel in dashboard["panels"]:
    for target in panel.get("targets", []):
        n += 1
        expr = target["expr"].replace("$__rate_interval", "5m").replace("$gatherer", ".*")
        print(f"      - record: dashboard_query_{n}\n        expr: {json.dumps(expr)}")
EOF
        check_status "dashboard queries parse as PromQL (promtool)" promtool check rules "$scratch/dashboard-rules.yml"
    else
        skip "dashboard PromQL parse" "promtool not installed"
    fi
else
    skip "dashboard JSON" "python3 not installed"
fi

# ---- summary --------------------------------------------------------------------------------

echo
echo "passed ${#passed[@]}, failed ${#failed[@]}, skipped ${#skipped[@]}"
for s in "${skipped[@]}"; do
    echo "  skipped: $s"
done
for f in "${failed[@]}"; do
    echo "  FAILED:  $f"
done
[ "${#failed[@]}" -eq 0 ]
