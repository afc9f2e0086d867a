#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian 12 machine (run as root).
# System packages: every tests/setup/apt-*.txt (one package a line, # comments allowed).
# Python: this project with its test extras. Then every tests/setup/post-*.sh in name order.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top"
PY=${PYTHON:-python3}

pkgs=$(cat "$here"/apt-*.txt 2>/dev/null | sed 's/#.*//' | tr -s ' \t' '\n' | sort -u | tr '\n' ' ')
if [ -n "${pkgs// /}" ]; then
    missing=""
    for p in $pkgs; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "install: apt packages:$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends $missing
    fi
fi

echo "install: python package with extras"
$PY -m pip install -q --disable-pip-version-check -e ".[test,mqtt,serial,progress]"

for s in "$here"/post-*.sh; do
    [ -e "$s" ] || continue
    echo "install: $(basename "$s")"
    bash "$s"
done
echo "install: done"
