// Runs gatewatch's MicroPython-portable tests under the MicroPython WebAssembly port in Node.
//
// Usage: node firmware/micropython/run.mjs [--repo DIR] [--heap BYTES] TEST_FILE...
//        node firmware/micropython/run.mjs [--repo DIR] [--heap BYTES] --exec PYTHON_CODE
//
// The port's filesystem is an in-memory one, so the runner copies what a device would have:
// agent/core becomes the package `core` in /lib (MicroPython's default library path, the way a
// frozen manifest would provide it), tests/__init__.py, tests/core and tests/data keep their
// repository layout under /repo, and /repo is the working directory. agent/ itself is NOT copied,
// so `import agent.core` fails there and the tests fall back to `import core`, as on a device.
//
// Each TEST_FILE (a path like tests/core/test_bloom.py) is imported as a module and every
// top-level `test_*` function is called, in name order, by tests/core/mp_runner.py. The exit
// status is 0 when all passed (skips allowed), 1 when any failed, 2 on a usage or load error.
// --exec runs the given code in the same environment instead (benchmarks, experiments); exit 0
// unless it raises.

import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import fs from "node:fs";
import path from "node:path";
import url from "node:url";

const HERE = path.dirname(url.fileURLToPath(import.meta.url));

function usage(msg) {
  process.stderr.write(`run.mjs: ${msg}\n`);
  process.stderr.write("usage: node run.mjs [--repo DIR] [--heap BYTES] TEST_FILE...\n");
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { repo: path.resolve(HERE, "..", ".."), heap: 64 * 1024 * 1024, files: [], exec: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--repo") opts.repo = path.resolve(argv[++i] ?? usage("--repo needs a folder"));
    else if (a === "--heap") {
      opts.heap = Number(argv[++i]);
      if (!Number.isInteger(opts.heap) || opts.heap < 256 * 1024) usage("--heap needs a byte count >= 262144");
    } else if (a === "--exec") opts.exec = argv[++i] ?? usage("--exec needs Python code");
    else if (a.startsWith("--")) usage(`unknown option ${a}`);
    else opts.files.push(a);
  }
  if (opts.files.length === 0 && opts.exec === null) usage("no test file given");
  if (opts.files.length && opts.exec !== null) usage("give test files or --exec, not both");
  return opts;
}

// Copies a host folder into the emulated filesystem; only plain files and folders, no symlinks,
// and no __pycache__ (CPython's bytecode means nothing to MicroPython).
function copyTree(FS, src, dst, filter) {
  try { FS.mkdir(dst); } catch (e) { /* exists */ }
  for (const ent of fs.readdirSync(src, { withFileTypes: true })) {
    if (ent.name === "__pycache__" || ent.name.startsWith(".")) continue;
    const s = path.join(src, ent.name);
    const d = dst + "/" + ent.name;
    if (ent.isDirectory()) copyTree(FS, s, d, filter);
    else if (ent.isFile() && (!filter || filter(ent.name))) FS.writeFile(d, fs.readFileSync(s));
  }
}

function mkdirs(FS, p) {
  let cur = "";
  for (const part of p.split("/").filter(Boolean)) {
    cur += "/" + part;
    try { FS.mkdir(cur); } catch (e) { /* exists */ }
  }
}

function toModuleName(repo, file) {
  const rel = path.relative(repo, path.resolve(file));
  if (rel.startsWith("..") || !rel.endsWith(".py")) usage(`${file} is not a .py file inside ${repo}`);
  if (!rel.startsWith("tests" + path.sep + "core" + path.sep)) usage(`${file} is not under tests/core/`);
  return rel.slice(0, -3).split(path.sep).join(".");
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const modules = opts.files.map((f) => {
    if (!fs.existsSync(f)) usage(`${f} does not exist`);
    return toModuleName(opts.repo, f);
  });
  const coreSrc = path.join(opts.repo, "agent", "core");
  if (!fs.existsSync(coreSrc)) usage(`${coreSrc} not found: is --repo the gatewatch work tree?`);

  // linebuffer: each write is one whole line, so stdout keeps the order the Python code printed in.
  const mp = await loadMicroPython({
    heapsize: opts.heap,
    linebuffer: true,
    stdout: (line) => process.stdout.write(line + "\n"),
    stderr: (line) => process.stderr.write(line + "\n"),
  });
  const FS = mp.FS;
  mkdirs(FS, "/lib");
  copyTree(FS, coreSrc, "/lib/core", (n) => n.endsWith(".py"));
  mkdirs(FS, "/repo/tests");
  const testsInit = path.join(opts.repo, "tests", "__init__.py");
  FS.writeFile("/repo/tests/__init__.py", fs.existsSync(testsInit) ? fs.readFileSync(testsInit) : "");
  copyTree(FS, path.join(opts.repo, "tests", "core"), "/repo/tests/core", (n) => n.endsWith(".py"));
  const data = path.join(opts.repo, "tests", "data");
  if (fs.existsSync(data)) copyTree(FS, data, "/repo/tests/data");
  FS.chdir("/repo");

  if (opts.exec !== null) {
    try {
      mp.runPython("import sys\nsys.path.insert(0, '/repo')");
      mp.runPython(opts.exec);
    } catch (e) {
      process.stderr.write(`run.mjs: ${e && e.message ? e.message : e}\n`);
      process.exit(1);
    }
    process.exit(0);
  }

  let failed = 0;
  try {
    mp.runPython("import sys\nsys.path.insert(0, '/repo')\nfrom tests.core import mp_runner as _gw_runner");
    for (const mod of modules) {
      mp.runPython(`_gw_runner.run_module(${JSON.stringify(mod)})`);
    }
    mp.runPython("_gw_runner.print_summary()\n_gw_failed = _gw_runner.failed_count()");
    // runPython's own return value is not the expression's, so the count travels in a global.
    failed = Number(mp.globals.get("_gw_failed"));
    if (!Number.isInteger(failed)) throw new Error(`bad failure count ${failed}`);
  } catch (e) {
    process.stderr.write(`run.mjs: MicroPython raised outside a test:\n${e && e.message ? e.message : e}\n`);
    process.exit(2);
  }
  process.exit(failed ? 1 : 0);
}

await main();
