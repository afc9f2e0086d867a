"""Smoke test of the emulated arm64 board: qemu-system-aarch64 -M virt -cpu cortex-a53 (TCG).

The Debian arm64 kernel boots the cached root filesystem packed as an initramfs
(firmware/qemu/make-boot-image.sh). Its /init runs firmware/qemu/board-agent.sh: the agent daemon
with the emulated HAL and a signed list built here from a benign generated image, a scan of that
image and of an unrelated one through the daemon's local API, then the serial management console
on the board's UART (ttyAMA0). The host reaches the UART as a TCP socket on 127.0.0.1 and drives
it with pyserial (``socket://``), as a technician would with a USB serial adapter.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from agent.hashing import samples
from tests.arm.conftest import QEMU_DIR, require_root_and_tools, rootfs
from tests.waiting import free_port

serial = pytest.importorskip("serial")
pytestmark = pytest.mark.slow

BOOT_TIMEOUT = 600  # TCG on 2 shared cores: allow for a busy machine


class Uart:
    """Line-oriented access to the board's UART over pyserial, with deadlines."""

    def __init__(self, url: str):
        self.url = url
        self.port = serial.serial_for_url(url, timeout=0.5)
        self.buf = b""
        self.seen: list = []

    def read_line(self, deadline: float) -> str:
        while b"\n" not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError("UART silent; last lines:\n" + "\n".join(self.seen[-30:]))
            self.buf += self.port.read(4096)
        line, self.buf = self.buf.split(b"\n", 1)
        text = line.decode("utf-8", "replace").strip("\r")
        self.seen.append(text)
        return text

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            line = self.read_line(deadline)
            m = rx.search(line)
            if m:
                return m

    def command(self, cmd: bytes, timeout: float = 120) -> list:
        """Send one command line; return the reply lines up to and including 'ok' or 'error: ...'."""
        self.port.write(cmd + b"\r\n")
        deadline = time.monotonic() + timeout
        out = []
        while True:
            line = self.read_line(deadline)
            if not line:
                continue
            out.append(line)
            if line == "ok" or line.startswith("error:"):
                return out


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    require_root_and_tools("qemu-system-aarch64", "cpio", "debootstrap")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.confirm.wire import Entry
    from agent.lists.trust import public_key_line
    from tools.build import build_list
    from agent.hashing.imaging import digests

    work = tmp_path_factory.mktemp("board")
    known = samples.encode(samples.generate_image(31, size=(640, 480)), "JPEG", 90)
    other = samples.encode(samples.generate_image(32, size=(640, 480)), "JPEG", 90)
    (work / "known.jpg").write_bytes(known)
    (work / "other.jpg").write_bytes(other)
    key = Ed25519PrivateKey.generate()
    (work / "trust.pub").write_text(public_key_line(key.public_key(), "board-smoke"))
    dev, _, _ = build_list(source="board-smoke", name="exact", signal="sha256",
                           entries=[Entry("known-1", digests(known)[0])], key=key,
                           out_dir=str(work / "built"), fp_rate=1e-6, expires_days=1)
    (work / "lists").mkdir()
    Path(dev).rename(work / "lists" / Path(dev).name)

    rootfs("arm64")
    img = work / "image"
    t0 = time.monotonic()
    proc = subprocess.run([str(QEMU_DIR / "make-boot-image.sh"), str(img), "--lists", str(work / "lists"),
                           "--trust", str(work / "trust.pub"), "--scan", str(work / "known.jpg"),
                           "--scan", str(work / "other.jpg")], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print("boot image packed in %.0f s: %s" % (time.monotonic() - t0, proc.stderr.strip().splitlines()[-1]))

    port = free_port()
    qemu = subprocess.Popen([str(QEMU_DIR / "boot-arm64.sh"), str(img), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    uart = None
    try:
        deadline = time.monotonic() + 60
        while uart is None:
            try:
                uart = Uart("socket://127.0.0.1:%d" % port)
            except serial.SerialException:
                if qemu.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("QEMU did not listen on the UART socket: %s"
                                         % qemu.stdout.read().decode(errors="replace")[-2000:])
                time.sleep(0.2)
        uart.t0 = time.monotonic()
        yield uart
    finally:
        if uart is not None:
            uart.port.close()
        qemu.terminate()
        try:
            qemu.wait(timeout=20)
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu.wait()
        log = img / "serial.log"
        if log.exists():  # the whole UART transcript, for a failure's report
            print("UART transcript (last 40 lines):\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))
        shutil.rmtree(img, ignore_errors=True)  # 340 MB; pytest keeps old tmp folders around


def test_boot_agent_and_console(board):
    """One ordered session: boot, daemon with the list, scans, then the console's commands."""
    m = board.wait_for(r"gatewatch-board: booted (\S+) (\S+)", BOOT_TIMEOUT)
    assert m.group(1) == "aarch64"
    print("kernel %s booted after %.0f s" % (m.group(2), time.monotonic() - board.t0))
    board.wait_for(r"board-agent: daemon ready", BOOT_TIMEOUT)
    print("daemon ready after %.0f s" % (time.monotonic() - board.t0))

    scans = {}
    for _ in range(2):
        m = board.wait_for(r"board-scan: (\S+) (.*)$", 300)
        scans[m.group(1)] = json.loads(m.group(2))
    assert scans["known.jpg"]["verdict"] == "match", scans
    assert scans["known.jpg"]["action"] == "block", scans
    assert scans["known.jpg"]["source"] == "board-smoke"
    assert scans["other.jpg"]["verdict"] == "clean", scans
    assert scans["other.jpg"]["action"] == "allow", scans
    board.wait_for(r"board-agent: console on /dev/ttyAMA0", 120)

    # The console may need a moment to open the UART: repeat `version` until it answers.
    deadline = time.monotonic() + 180
    while True:
        board.port.write(b"version\r\n")
        try:
            line = board.wait_for(r'"agent_version"', 10).string
            break
        except TimeoutError:
            assert time.monotonic() < deadline, "console never answered"
    assert json.loads(line)["python"].startswith("3.")
    board.wait_for(r"^ok$", 30)

    status = board.command(b"status")
    assert status[-1] == "ok", status
    st = json.loads(status[0])
    assert st["hal"] == "emulated"
    assert "board-smoke/exact" in st["lists"], st
    assert st["policy"].get("blocked", 0) >= 1 or "block" in json.dumps(st["policy"]), st["policy"]

    lists = board.command(b"lists")
    assert lists[-1] == "ok", lists
    assert any("board-smoke" in line for line in lists[:-1]), lists

    selftest = board.command(b"selftest", timeout=300)
    assert selftest[-1] == "ok" and selftest[0].startswith("selftest passed"), selftest
    assert "known image match (pdq+sha256)" in selftest[0], selftest

    # Bad input on the line: garbage bytes, an unknown command, an overlong line; the console
    # answers each with an error and keeps serving.
    assert board.command(b"\xff\xfe\x00garbage")[-1].startswith("error:")
    assert board.command(b"reboot-now")[-1].startswith("error:")
    assert board.command(b"x" * 2000)[-1].startswith("error:")
    assert board.command(b"version")[-1] == "ok"

    # A technician unplugs the adapter mid-line and plugs it back in: the console keeps serving.
    board.port.write(b"stat")
    board.port.close()
    time.sleep(1)
    board.port = serial.serial_for_url(board.url, timeout=0.5)
    board.buf = b""
    # A UART has no notion of a disconnect: the half line is still in the board's buffer. Enter
    # ends it (one error answer), then the console is back to normal.
    stale = board.command(b"")[-1]
    assert stale.startswith("error:") and "'stat'" in stale, stale
    reply = board.command(b"version")
    assert reply[-1] == "ok" and '"agent_version"' in reply[0], reply
    print("smoke test done after %.0f s" % (time.monotonic() - board.t0))
