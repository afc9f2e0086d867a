"""Runs tests/core, unchanged, under the MicroPython WebAssembly port in Node.

The same files run under CPython as ordinary pytest tests (pytest collects tests/core itself);
here they run a second time inside MicroPython through firmware/micropython/run.mjs, which
copies agent/core in as the package ``core``. tests/setup/post-micropython.sh installs the port.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import ROOT as REPO
RUNNER = REPO / "firmware" / "micropython" / "run.mjs"
PORT_PKG = REPO / "firmware" / "micropython" / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed, (\d+) skipped$", re.M)


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the port installed (the setup script is idempotent and fast)."""
    if not (PORT_PKG / "micropython.mjs").exists() or shutil.which("node") is None:
        subprocess.run(["sh", str(REPO / "tests" / "setup" / "post-micropython.sh")], check=True, timeout=600)
    path = shutil.which("node")
    assert path, "node is missing: run tests/setup/post-micropython.sh"
    return path


def run_port(node: str, files: list[str], repo: Path = REPO) -> subprocess.CompletedProcess:
    """Run the given test files inside MicroPython; returns the finished process."""
    return subprocess.run(
        [node, str(RUNNER), "--repo", str(repo), *files],
        cwd=str(repo), capture_output=True, text=True, timeout=300,
    )


def core_test_files() -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests" / "core").glob("test_*.py"))


def test_core_tests_pass_under_micropython(node):
    files = core_test_files()
    assert files, "tests/core has no test files"
    proc = run_port(node, files)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    m = SUMMARY.search(proc.stdout)
    assert m, "no summary line from the MicroPython runner:\n%s\n%s" % (proc.stdout, proc.stderr)
    passed, failed, _skipped = (int(x) for x in m.groups())
    assert proc.returncode == 0 and failed == 0, proc.stdout + proc.stderr
    # Every test that CPython collects must have run (passed or skipped) under MicroPython too.
    names = set(re.findall(r"^(?:PASS|SKIP) ([\w.]+::\w+)", proc.stdout, re.M))
    skipped_modules = set(re.findall(r"^SKIP ([\w.]+): ", proc.stdout, re.M))
    for f in files:
        mod = f[:-3].replace("/", ".")
        if mod in skipped_modules:
            continue
        src = (REPO / f).read_text()
        for fn in re.findall(r"^def (test_\w+)\(", src, re.M):
            assert "%s::%s" % (mod, fn) in names, "%s::%s did not run under MicroPython" % (mod, fn)
    assert passed > 0


def test_core_runs_as_micropython_not_cpython(node, tmp_path):
    """The port really is MicroPython, and agent/ is not visible there (only `core`)."""
    repo = _scratch_repo(tmp_path, "test_probe.py", (
        "import sys\n"
        "def test_impl():\n"
        "    assert sys.implementation.name == 'micropython', sys.implementation\n"
        "def test_no_agent_package():\n"
        "    try:\n"
        "        import agent.core\n"
        "    except ImportError:\n"
        "        return\n"
        "    raise AssertionError('agent package visible inside the port')\n"
        "def test_core_package():\n"
        "    import core\n"
        "    assert core.__name__ == 'core'\n"
    ))
    proc = run_port(node, ["tests/core/test_probe.py"], repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed, 0 failed, 0 skipped" in proc.stdout


def test_runner_reports_failures(node, tmp_path):
    repo = _scratch_repo(tmp_path, "test_bad.py", (
        "def test_good():\n    pass\n"
        "def test_bad():\n    assert 1 + 1 == 3, 'arithmetic'\n"
        "def test_crash():\n    raise MemoryError('boom')\n"
    ))
    proc = run_port(node, ["tests/core/test_bad.py"], repo)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 passed, 2 failed, 0 skipped" in proc.stdout
    assert "FAIL tests.core.test_bad::test_bad" in proc.stdout
    assert "AssertionError: arithmetic" in proc.stdout


def test_runner_rejects_bad_usage(node, tmp_path):
    proc = run_port(node, ["tests/core/does_not_exist.py"])
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = run_port(node, [])
    assert proc.returncode == 2 and "no test file" in proc.stderr
    outside = tmp_path / "test_x.py"
    outside.write_text("def test_x():\n    pass\n")
    proc = run_port(node, [str(outside)])
    assert proc.returncode == 2 and "inside" in proc.stderr


def test_runner_reports_import_error(node, tmp_path):
    repo = _scratch_repo(tmp_path, "test_broken.py", "import does_not_exist_anywhere\n")
    proc = run_port(node, ["tests/core/test_broken.py"], repo)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "does_not_exist_anywhere" in proc.stderr


def _scratch_repo(tmp_path: Path, name: str, text: str) -> Path:
    """A throwaway repo layout with the real agent/core and runner plus one test file."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "agent" / "core", repo / "agent" / "core",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "tests" / "core").mkdir(parents=True)
    (repo / "tests" / "__init__.py").write_text("")
    for f in ("__init__.py", "mp_runner.py", "support.py"):
        shutil.copy(REPO / "tests" / "core" / f, repo / "tests" / "core" / f)
    (repo / "tests" / "core" / name).write_text(text)
    os.utime(repo)
    return repo


def test_manifest_freezes_the_core():
    """firmware/micropython/manifest.py names agent/core as package `core` plus the port's defaults.

    MicroPython's manifest is Python calling include()/package(); evaluated here with recording
    stand-ins for those functions, the way the firmware build's tools/manifestfile.py calls them.
    """
    manifest = REPO / "firmware" / "micropython" / "manifest.py"
    calls = []
    env = {
        "include": lambda path, **kw: calls.append(("include", path, kw)),
        "package": lambda name, **kw: calls.append(("package", name, kw)),
        "module": lambda name, **kw: calls.append(("module", name, kw)),
        "require": lambda name, **kw: calls.append(("require", name, kw)),
    }
    exec(compile(manifest.read_text(), str(manifest), "exec"), env)
    assert ("include", "$(PORT_DIR)/boards/manifest.py", {}) in calls
    pkgs = [c for c in calls if c[0] == "package"]
    assert len(pkgs) == 1 and pkgs[0][1] == "core"
    base = (manifest.parent / pkgs[0][2]["base_path"]).resolve()
    core_dir = base / "core"
    assert core_dir == REPO / "agent" / "core"
    assert (core_dir / "__init__.py").exists() and (core_dir / "bloom.py").exists()


def test_runner_exec_runs_code_with_the_core(node):
    proc = subprocess.run([node, str(RUNNER), "--exec",
                           "from core.bloom import fmix64\nprint('fmix64(1)=%x' % fmix64(1))"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "fmix64(1)=b456bcfc34c2cb2c" in proc.stdout
    proc = subprocess.run([node, str(RUNNER), "--exec", "raise OSError(5, 'boom')"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "boom" in proc.stderr
    proc = subprocess.run([node, str(RUNNER), "--exec", "pass", "tests/core/test_bloom.py"],
                          capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert proc.returncode == 2 and "not both" in proc.stderr
