"""The core and matching tests inside emulated arm64 and armhf root filesystems (qemu-user, chroot).

firmware/qemu/run-user.sh unpacks the cached Debian root filesystem, copies the work tree in and
runs pytest there on firmware/qemu/user-tests.txt: tests/core (which reads the golden list files)
and tests/arm/inside (hashing, list building, signing, verifying and matching on the ARM CPU).
A second check hashes the same benign image files natively and on each board: the exact digests
must be equal and the PDQ hashes (floating point on another CPU) equal or within a few bits.
"""

from __future__ import annotations

import json
import re

import pytest

from agent.hashing import samples
from agent.core.lsh import hamming
from tests.arm.conftest import REPO, require_root_and_tools, rootfs, run_user

pytestmark = pytest.mark.slow
ARCHES = ("arm64", "armhf")
MACHINE = {"arm64": "aarch64", "armhf": "armv7l"}


@pytest.fixture(scope="module", autouse=True)
def tools():
    require_root_and_tools("debootstrap", "update-binfmts", "chroot", "unshare")


@pytest.mark.parametrize("arch", ARCHES)
def test_core_and_matching_tests_pass_on_board(arch):
    rootfs(arch)
    proc = run_user(arch)
    out = proc.stdout + proc.stderr
    print(out[-6000:])
    assert proc.returncode == 0, out[-6000:]
    m = re.search(r"(\d+) passed", proc.stdout)
    assert m and int(m.group(1)) >= 40, out[-3000:]
    assert " failed" not in proc.stdout and " error" not in proc.stdout
    # Every listed test file existed and ran: nothing was silently left out.
    assert "not in the work tree" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("arch", ARCHES)
def test_board_python_is_arm(arch):
    proc = run_user(arch, "python3", "-c", "import platform, struct; print(platform.machine(), struct.calcsize('P') * 8)")
    assert proc.returncode == 0, proc.stderr
    machine, bits = proc.stdout.split()
    assert machine == MACHINE[arch]
    assert bits == ("64" if arch == "arm64" else "32")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("share")
    names = []
    # 1024x768 JPEGs take the scaled (draft) decode path, smaller ones and PNGs the full one.
    for seed, fmt, size in ((21, "JPEG", (640, 480)), (22, "PNG", (640, 480)), (23, "JPEG", (1024, 768)),
                            (24, "JPEG", (1600, 1200))):
        name = "img%d.%s" % (seed, fmt.lower().replace("jpeg", "jpg"))
        (d / name).write_bytes(samples.encode(samples.generate_image(seed, size=size), fmt))
        names.append(name)
    return d, names


def _hash_lines(text):
    return {json.loads(line)["path"].rsplit("/", 1)[-1]: json.loads(line) for line in text.splitlines()
            if line.startswith("{")}


@pytest.mark.parametrize("arch", ARCHES)
def test_hashes_agree_with_native(arch, images):
    import subprocess
    import sys

    d, names = images
    native = subprocess.run([sys.executable, "-m", "agent.cli", "hash", *[str(d / n) for n in names]],
                            capture_output=True, text=True, cwd=str(REPO), timeout=120)
    assert native.returncode == 0, native.stderr
    board = run_user(arch, "python3", "-m", "agent.cli", "hash", *["/opt/share/%s" % n for n in names], share=d)
    assert board.returncode == 0, board.stderr
    a, b = _hash_lines(native.stdout), _hash_lines(board.stdout)
    assert sorted(a) == sorted(b) == sorted(names)
    for n in names:
        for field in ("sha256", "sha1", "md5", "bytes"):
            assert a[n][field] == b[n][field], (n, field)
        dist = hamming(bytes.fromhex(a[n]["pdq"]), bytes.fromhex(b[n]["pdq"]))
        print("%s %s: PDQ distance native vs board = %d" % (arch, n, dist))
        assert dist <= 4, (n, dist)
