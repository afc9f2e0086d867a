#!/bin/sh
# Installs the MicroPython WebAssembly port (npm) that tests/micropython/test_core_port.py runs the core
# tests under. Idempotent: does nothing when the locked version is already installed.
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
dir="$here/firmware/micropython"
pkg="$dir/node_modules/@micropython/micropython-webassembly-pyscript/package.json"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "post-micropython: node/npm missing, installing Debian's nodejs and npm"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi

want=$(node -e 'const l=require(process.argv[1]);console.log(l.packages["node_modules/@micropython/micropython-webassembly-pyscript"].version)' "$dir/package-lock.json")
have=$(node -e 'try{console.log(require(process.argv[1]).version)}catch(e){console.log("none")}' "$pkg")
if [ "$want" = "$have" ]; then
    echo "post-micropython: micropython-webassembly-pyscript $have already installed"
    exit 0
fi
echo "post-micropython: installing micropython-webassembly-pyscript $want (had: $have)"
cd "$dir"
npm ci --no-audit --no-fund --loglevel=error
