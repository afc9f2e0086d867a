"""Ports and waiting, for every test that starts a server: one definition each."""

import socket
import time


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0, proc=None, host: str = "127.0.0.1") -> None:
    """Return once something listens on ``host:port``; fail early if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening on %d" % (proc.returncode, port))
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("nothing listening on %s:%d after %.0fs" % (host, port, timeout))


def wait_for(cond, timeout: float = 15.0, interval: float = 0.02):
    """Poll ``cond`` until truthy; return its value or raise AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("condition not met within %.1fs" % timeout)


def stop_process(proc, grace: float = 10.0) -> None:
    """SIGTERM ``proc`` if it still runs, give it ``grace`` seconds, then SIGKILL; always reaped."""
    import signal
    import subprocess
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
