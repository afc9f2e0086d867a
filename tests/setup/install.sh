#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian 12 machine (run as root).
# System packages: every tests/setup/apt-*.txt (one package a line, # comments allowed).
# Python: this project with its test extras. Then every tests/setup/post-*.sh in name order.
#
# Idempotent (a second run only checks) and safe to start twice at once (CI's installer and a
# developer's run): one host-wide lock around it all, apt waits for the dpkg lock instead of
# failing, and every post-*.sh is idempotent and race-free on its own.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top"
PY=${PYTHON:-python3}

mkdir -p /run/lock
exec 8>>/run/lock/gatewatch-install.lock
flock -w 3600 8 || { echo "install: another install.sh still runs after an hour" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
# Wait for the dpkg lock (a fresh cloud machine's apt-daily/unattended-upgrades may hold it for
# minutes) and retry downloads, instead of failing the run.
APT_OPTS=(-o DPkg::Lock::Timeout=900 -o Acquire::Retries=3)

apt_update() {
    local i
    for i in 1 2 3; do
        apt-get "${APT_OPTS[@]}" update -qq && return 0
        echo "install: apt-get update failed (attempt $i of 3), retrying in $((i * 10)) s" >&2
        sleep $((i * 10))
    done
    return 1
}

# Installs without starting anything: squid, c-icap, e2guardian and mosquitto would otherwise be
# started by their postinst (ports 3128, 1344, 8080, 1883, CPU and memory on CI's two cores);
# the tests start their own instances. policy-rc.d is what invoke-rc.d and deb-systemd-invoke ask.
POLICY=/usr/sbin/policy-rc.d
POLICY_MARK="gatewatch tests/setup/install.sh"
# A run killed in the middle of apt_install must not leave service starts forbidden for good.
if [ -f "$POLICY" ] && grep -q "$POLICY_MARK" "$POLICY"; then rm -f "$POLICY"; fi
apt_install() {
    local saved="" rc=0
    if [ -e "$POLICY" ]; then saved=$(mktemp); cp -p "$POLICY" "$saved"; fi
    restore_policy() { if [ -n "$saved" ]; then mv -f "$saved" "$POLICY"; else rm -f "$POLICY"; fi; }
    trap restore_policy EXIT
    printf '#!/bin/sh\n# %s: no service starts during its installs\nexit 101\n' "$POLICY_MARK" > "$POLICY"
    chmod 755 "$POLICY"
    apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "$@" || rc=$?
    restore_policy
    trap - EXIT
    return "$rc"
}

pkgs=$(cat "$here"/apt-*.txt 2>/dev/null | sed 's/#.*//' | tr -s ' \t' '\n' | sort -u | tr '\n' ' ')
# Debian's own python3 comes without pip, and without the headers that building pdqhash needs.
case "$(command -v "$PY")" in
    /usr/bin/*) pkgs="$pkgs python3-dev" ;;
esac
if ! "$PY" -m pip --version >/dev/null 2>&1; then
    case "$(command -v "$PY")" in
        /usr/bin/*) pkgs="$pkgs python3-pip" ;;
        *) echo "install: $PY has no pip (python -m ensurepip, or PYTHON=/usr/bin/python3)" >&2; exit 1 ;;
    esac
fi
if [ -n "${pkgs// /}" ]; then
    missing=""
    for p in $pkgs; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "install: apt packages:$missing"
        # An earlier install that was interrupted leaves dpkg half-configured; apt refuses then.
        if [ -n "$(dpkg --audit 2>/dev/null)" ]; then dpkg --configure -a; fi
        apt_update
        # shellcheck disable=SC2086
        apt_install $missing
    fi
fi

# Debian 12's own python3 is "externally managed" (PEP 668): pip refuses to install into it
# without this. The machine is a throwaway CI box or a developer's choice of PYTHON.
if "$PY" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
    echo "install: $PY is externally managed (PEP 668); installing with PIP_BREAK_SYSTEM_PACKAGES=1"
    export PIP_BREAK_SYSTEM_PACKAGES=1
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

echo "install: python package with extras"
# editable_mode=compat: a path entry, not an import hook, so a checkout's own tree (the working
# folder, PYTHONPATH) still comes first where several checkouts share one Python (CI beside a developer's)
"$PY" -m pip install -q --disable-pip-version-check -e ".[test,mqtt,serial,progress]" --config-settings editable_mode=compat

for s in "$here"/post-*.sh; do
    [ -e "$s" ] || continue
    echo "install: $(basename "$s")"
    bash "$s"
done
echo "install: done"
