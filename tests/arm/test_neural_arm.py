"""The neural hash on the emulated ARM boards (qemu-user, chroot; firmware/qemu/run-user.sh).

arm64: the aarch64 ai-edge-litert wheel from PyPI is installed in the board's root filesystem
(firmware/qemu/litert-site.sh, cached at set-up time, with Debian's numpy 1.24), and `gatewatch hash`
there must give the codes the x86 host gives for the same benign files, within a few bits (int8
kernels on another CPU). armhf: PyPI has no TFLite runtime for armv7, so the board has none;
`gatewatch hash` leaves the field out and a signed neural list is refused by `gatewatch scan` with
that reason (exit 2), never loaded and silently unused.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agent.core.lsh import hamming
from agent.hashing import samples
from tests.arm.conftest import QEMU_DIR, REPO, require_root_and_tools, rootfs, run_user

pytestmark = pytest.mark.slow
MAX_BOARD_BITS = 4  # of 128: int8 XNNPACK kernels round differently on aarch64


@pytest.fixture(scope="module", autouse=True)
def tools():
    require_root_and_tools("debootstrap", "update-binfmts", "chroot", "unshare")


@pytest.fixture(scope="module")
def share(tmp_path_factory):
    """Benign images (generated, and scikit-image photos where installed) and a signed neural list."""
    d = tmp_path_factory.mktemp("neural-share")
    imgs = d / "images"
    imgs.mkdir()
    for seed, size in ((31, (640, 480)), (32, (1024, 768))):
        (imgs / ("gen%d.jpg" % seed)).write_bytes(samples.encode(samples.generate_image(seed, size), "JPEG", 90))
    (imgs / "gen33.png").write_bytes(samples.encode(samples.generate_image(33, (320, 240)), "PNG"))
    for name, img in samples.sample_images()[:4]:
        (imgs / (name + ".jpg")).write_bytes(samples.encode(img))
        w, h = img.size
        crop = img.crop((w // 20, h // 20, w - w // 20, h - h // 20))
        (imgs / (name + "-crop10.jpg")).write_bytes(samples.encode(crop))
    hub = [sys.executable, "-m", "tools.hub_cli"]
    for args in (["keys", "generate", "--out", str(d / "keys"), "--source", "hotline"],
                 ["lists", "build", "--source", "hotline", "--list", "known-neural", "--signal", "neural",
                  "--input", str(imgs), "--key", str(d / "keys" / "hotline.key"), "--out", str(d / "lists"),
                  "--no-progress"]):
        r = subprocess.run(hub + args, capture_output=True, text=True, cwd=str(REPO), timeout=300)
        assert r.returncode == 0, r.stderr
    return d


def _codes(text):
    rows = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return {r["path"].rsplit("/", 1)[-1]: r for r in rows}


def test_litert_site_is_cached_and_armv7_has_no_wheel():
    first = subprocess.run([str(QEMU_DIR / "litert-site.sh"), "arm64"], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([str(QEMU_DIR / "litert-site.sh"), "arm64"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "cached" in again.stderr
    assert again.stdout.strip().splitlines()[-1] == first.stdout.strip().splitlines()[-1]
    armhf = subprocess.run([str(QEMU_DIR / "litert-site.sh"), "armhf"], capture_output=True, text=True, timeout=60)
    assert armhf.returncode == 3 and "armv7" in armhf.stderr


def test_arm64_board_computes_the_same_neural_codes_as_x86(share):
    pytest.importorskip("ai_edge_litert", reason="the host needs the runtime too (test extra)")
    rootfs("arm64")
    imgs = share / "images"
    names = sorted(p.name for p in imgs.iterdir())
    native = subprocess.run([sys.executable, "-m", "agent.cli", "hash", *[str(imgs / n) for n in names]],
                            capture_output=True, text=True, cwd=str(REPO), timeout=300)
    assert native.returncode == 0, native.stderr
    board = run_user("arm64", "python3", "-c",
                     "import runpy, sys; from agent.hashing import neural; "
                     "print('runtime', neural.find_runtime()[0], file=sys.stderr); "
                     "sys.argv = ['gatewatch', 'hash'] + sys.argv[1:]; runpy.run_module('agent.cli', run_name='__main__')",
                     *["/opt/share/images/%s" % n for n in names], share=share)
    assert board.returncode == 0, board.stderr[-3000:]
    assert "runtime ai_edge_litert" in board.stderr
    a, b = _codes(native.stdout), _codes(board.stdout)
    assert sorted(a) == sorted(b) == names
    worst = 0
    for n in names:
        assert a[n]["sha256"] == b[n]["sha256"]
        assert len(a[n]["neural"]) == len(b[n]["neural"]) == 32, (n, a[n], b[n])
        d = hamming(bytes.fromhex(a[n]["neural"]), bytes.fromhex(b[n]["neural"]))
        print("arm64 %s: neural distance native vs board = %d" % (n, d))
        worst = max(worst, d)
    assert worst <= MAX_BOARD_BITS, worst


def test_armhf_board_has_no_runtime_and_refuses_neural_lists(share):
    rootfs("armhf")
    board = run_user("armhf", "python3", "-m", "agent.cli", "hash", "/opt/share/images/gen31.jpg", share=share)
    assert board.returncode == 0, board.stderr
    (row,) = _codes(board.stdout).values()
    assert "neural" not in row and len(row["pdq"]) == 64  # PDQ and digests still work
    scan = run_user("armhf", "python3", "-m", "agent.cli", "scan", "--lists", "/opt/share/lists", "--trust",
                    "/opt/share/keys/hotline.pub", "/opt/share/images/gen31.jpg", share=share)
    assert scan.returncode == 2, (scan.stdout, scan.stderr)
    assert "no TFLite runtime installed" in scan.stderr and "known-neural" in scan.stderr, scan.stderr
    assert '"verdict"' not in scan.stdout  # nothing was scanned against a list it cannot use
