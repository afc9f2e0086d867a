#!/bin/sh
# Installs the MicroPython WebAssembly port (npm) that tests/micropython/test_core_port.py runs the core
# tests under. Idempotent: does nothing when the locked version is already installed.
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
dir="$here/firmware/micropython"
pkg="$dir/node_modules/@micropython/micropython-webassembly-pyscript/package.json"

# One run at a time: npm ci empties node_modules first, a second run would see it half-filled.
exec 7>>"$dir/.post-micropython.lock"
flock -w 900 7 || { echo "post-micropython: another run holds $dir/.post-micropython.lock" >&2; exit 1; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    # Only when missing: Debian's npm would fight a Node.js from elsewhere (NodeSource, nvm).
    echo "post-micropython: node/npm missing, installing Debian's nodejs and npm"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have no package lists at all; wait for the dpkg lock, retry downloads.
    apt-get -o DPkg::Lock::Timeout=900 -o Acquire::Retries=3 update -qq || \
        { sleep 10; apt-get -o DPkg::Lock::Timeout=900 -o Acquire::Retries=3 update -qq; }
    apt-get -o DPkg::Lock::Timeout=900 -o Acquire::Retries=3 install -y -qq --no-install-recommends nodejs npm
fi

want=$(node -e 'const l=require(process.argv[1]);console.log(l.packages["node_modules/@micropython/micropython-webassembly-pyscript"].version)' "$dir/package-lock.json")
have=$(node -e 'try{console.log(require(process.argv[1]).version)}catch(e){console.log("none")}' "$pkg")
if [ "$want" = "$have" ]; then
    echo "post-micropython: micropython-webassembly-pyscript $have already installed"
    exit 0
fi
echo "post-micropython: installing micropython-webassembly-pyscript $want (had: $have)"
cd "$dir"
# Retries: a registry hiccup on a fresh machine should not fail the whole installation.
for i in 1 2 3; do
    npm ci --no-audit --no-fund --loglevel=error && exit 0
    echo "post-micropython: npm ci failed (attempt $i of 3)" >&2
    sleep $((i * 10))
done
exit 1
