"""firmware/qemu/binfmt.sh is race-free and idempotent.

tests/setup/post-arm.sh builds the arm64 and armhf root filesystems at once and each build calls
binfmt.sh: on a fresh machine both used to mount binfmt_misc and the loser's "already mounted"
failed the whole installation. Here several copies start at the same moment on a binfmt_misc
that is not mounted yet. They race on a second mount point (GW_BINFMT_DIR) of the kernel's one
binfmt_misc, so the real /proc/sys/fs/binfmt_misc, which other ARM runs may use, is never
unmounted.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.arm.conftest import QEMU_DIR, require_root_and_tools

BINFMT = str(QEMU_DIR / "binfmt.sh")
NAMES = ["qemu-aarch64", "qemu-arm"]


def _mounts_at(path: str) -> int:
    with open("/proc/mounts") as fh:
        return sum(1 for line in fh if line.split()[1:3] == [path, "binfmt_misc"])


@pytest.fixture
def registered():
    require_root_and_tools("update-binfmts", "flock", "mount")
    # The real mount point: mounted and both interpreters enabled (what the ARM tests need anyway).
    proc = subprocess.run([BINFMT] + NAMES, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "cannot mount binfmt_misc" in proc.stderr:
        pytest.skip("no binfmt_misc here: %s" % proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr


def test_concurrent_first_calls_all_succeed_and_mount_once(registered, tmp_path):
    where = tmp_path / "binfmt_misc"
    where.mkdir()
    env = dict(os.environ, GW_BINFMT_DIR=str(where), GW_BINFMT_LOCK=str(tmp_path / "binfmt.lock"))
    try:
        for _round in range(2):  # the first round mounts, the second finds everything in place
            procs = [subprocess.Popen([BINFMT] + NAMES, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for _ in range(6)]
            results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
            for p in procs:
                p.stdout.close()
                p.stderr.close()
            assert [rc for rc, _ in results] == [0] * 6, [err for _, err in results]
            assert _mounts_at(str(where)) == 1
            for name in NAMES:
                assert (where / name).read_text().splitlines()[0] == "enabled"
    finally:
        while _mounts_at(str(where)):
            subprocess.run(["umount", str(where)], check=True)


def test_missing_interpreter_is_a_clear_error(registered, tmp_path):
    proc = subprocess.run([BINFMT, "qemu-no-such-arch"], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, GW_BINFMT_LOCK=str(tmp_path / "binfmt.lock")))
    assert proc.returncode == 2
    assert "/usr/share/binfmts/qemu-no-such-arch missing" in proc.stderr
