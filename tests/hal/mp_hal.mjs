// Runs tests/hal/mp_hal_check.py under the MicroPython WebAssembly port (installed by
// tests/setup/post-micropython.sh into firmware/micropython/node_modules), with what a board
// would have frozen: hal/contracts.py, hal/micropython.py, hal/_machine_stub.py as package `hal`
// and agent/core/errors.py as `core.errors`. Not hal/__init__.py (CPython's factory) nor agent/.
//
// Usage: node tests/hal/mp_hal.mjs REPO_DIR. Exit 0 when the check printed its OK line.

import fs from "node:fs";
import path from "node:path";
import url from "node:url";

const repo = path.resolve(process.argv[2] ?? ".");
const port = path.join(repo, "firmware/micropython/node_modules/@micropython/micropython-webassembly-pyscript/micropython.mjs");
const { loadMicroPython } = await import(url.pathToFileURL(port).href);

const mp = await loadMicroPython({
  heapsize: 16 * 1024 * 1024,
  linebuffer: true,
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});
const FS = mp.FS;
for (const d of ["/lib", "/lib/hal", "/lib/core", "/data"]) {
  try { FS.mkdir(d); } catch (e) { /* exists */ }
}
FS.writeFile("/lib/hal/__init__.py", "");
for (const f of ["contracts.py", "micropython.py", "_machine_stub.py"]) {
  FS.writeFile("/lib/hal/" + f, fs.readFileSync(path.join(repo, "hal", f)));
}
FS.writeFile("/lib/core/__init__.py", "");
FS.writeFile("/lib/core/errors.py", fs.readFileSync(path.join(repo, "agent/core/errors.py")));
try {
  mp.runPython(fs.readFileSync(path.join(repo, "tests/hal/mp_hal_check.py"), "utf8"));
} catch (e) {
  process.stderr.write(`mp_hal.mjs: MicroPython raised:\n${e && e.message ? e.message : e}\n`);
  process.exit(1);
}
process.exit(0);
