#!/bin/sh
# Installs the test broker cluster's node packages (firmware/aedes: aedes, mqemitter-redis,
# aedes-persistence-redis, pinned by its package-lock.json) that tests/cluster/ and bench/bench_cluster.py
# start. Idempotent and cached: does nothing when node_modules holds exactly the locked versions.
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
dir="$here/firmware/aedes"

# One run at a time: npm ci empties node_modules first, a second run would see it half-filled.
exec 7>>"$dir/.post-cluster.lock"
flock -w 900 7 || { echo "post-cluster: another run holds $dir/.post-cluster.lock" >&2; exit 1; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    # post-micropython.sh installs Debian's nodejs and npm when they are missing; run it first
    sh "$here/tests/setup/post-micropython.sh"
fi

# installed == locked, for every package the lock names (not only the top three)
if node -e '
const fs = require("fs"), path = require("path");
const dir = process.argv[1];
const lock = JSON.parse(fs.readFileSync(path.join(dir, "package-lock.json"), "utf8"));
for (const [name, info] of Object.entries(lock.packages)) {
  if (!name) continue;
  let have;
  try { have = JSON.parse(fs.readFileSync(path.join(dir, name, "package.json"), "utf8")).version; } catch (e) { process.exit(1); }
  if (have !== info.version) process.exit(1);
}' "$dir"; then
    echo "post-cluster: aedes cluster packages already installed"
    exit 0
fi
echo "post-cluster: installing the aedes cluster packages (npm ci)"
cd "$dir"
for i in 1 2 3; do
    npm ci --no-audit --no-fund --loglevel=error && exit 0
    echo "post-cluster: npm ci failed (attempt $i of 3)" >&2
    sleep $((i * 10))
done
exit 1
