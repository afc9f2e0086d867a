"""Shared pieces of the ARM tests: root privileges, the cached root filesystems, running commands.

The tests under tests/arm/inside are collected natively too (they are ordinary tests of hashing
and matching); tests/arm/test_*.py run them again inside the emulated boards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
QEMU_DIR = REPO / "firmware" / "qemu"


def require_root_and_tools(*tools: str) -> None:
    """Fail (not skip) when the installer's tools are missing: CI installs them via tests/setup."""
    if os.geteuid() != 0:
        pytest.skip("the ARM tests need root (debootstrap, chroot, binfmt_misc)")
    missing = [t for t in tools if shutil.which(t) is None]
    assert not missing, "missing %s: run tests/setup/install.sh (tests/setup/apt-arm.txt)" % ", ".join(missing)


def rootfs(arch: str) -> Path:
    """The cached root filesystem tarball of ``arch`` (built on first use, ~5 min per arch)."""
    proc = subprocess.run([str(QEMU_DIR / "build-rootfs.sh"), arch], capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, "build-rootfs.sh %s failed:\n%s" % (arch, proc.stderr[-4000:])
    return Path(proc.stdout.strip().splitlines()[-1])


def run_user(arch: str, *command: str, share: Path = None, timeout: float = 1200) -> subprocess.CompletedProcess:
    """firmware/qemu/run-user.sh ARCH [COMMAND...]; returns the finished process."""
    env = dict(os.environ)
    if share is not None:
        env["GW_SHARE"] = str(share)
    return subprocess.run([str(QEMU_DIR / "run-user.sh"), arch, *command], capture_output=True, text=True,
                          timeout=timeout, env=env)
