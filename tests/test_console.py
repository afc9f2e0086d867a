"""Serial management console: protocol, loop://, a real pty, garbage, overlong lines, disconnects."""

import json
import os
import select
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

import agent
from agent.console import MAX_LINE, OVERLONG, Console, LineReader, StatusFile

serial = pytest.importorskip("serial", reason="pyserial is in the test extra")

# ------------------------------------------------------------------ protocol without I/O


def test_line_reader_splits_on_cr_lf_crlf_in_any_chunking():
    data = b"status\r\nlists\nversion\rhelp\n\n\r\n"
    expected = [b"status", b"lists", b"version", b"help"]
    assert LineReader().feed(data) == expected
    reader = LineReader()
    assert [e for i in range(len(data)) for e in reader.feed(data[i:i + 1])] == expected


def test_line_reader_backspace_edits():
    assert LineReader().feed(b"statuz\x08s\n\x7f\x7fhelpx\x7f\n") == [b"status", b"help"]


def test_line_reader_caps_and_discards_to_newline():
    reader = LineReader(max_line=8)
    assert reader.feed(b"123456789") == [OVERLONG]
    assert reader.feed(b"more junk") == []  # still discarding
    assert reader.feed(b"\nhelp\n") == [b"help"]


def _console(**kw):
    return Console("loop://", **kw)


def _lines(console, text):
    return console.handle_bytes(text if isinstance(text, bytes) else text.encode()).decode().split("\r\n")[:-1]


def test_unknown_command_is_a_clear_error():
    assert _lines(_console(), "x\n") == ["error: unknown command 'x'; try: help"]
    assert _lines(_console(), "STATUS\n") == ["error: unknown command 'STATUS'; try: help"]
    long_name = "y" * 100
    (line,) = _lines(_console(), long_name + "\n")
    assert line == "error: unknown command '%s...'; try: help" % ("y" * 32)


def test_help_lists_every_command():
    lines = _lines(_console(), "help\n")
    assert lines[-1] == "ok"
    for command in ("status", "lists", "version", "selftest", "help"):
        assert any(line.startswith(command) for line in lines[:-1]), command


def test_version():
    lines = _lines(_console(), "version\n")
    assert lines[-1] == "ok" and json.loads(lines[0])["agent_version"] == agent.__version__


def test_status_and_lists_come_from_the_providers():
    console = _console(status_provider=lambda: {"state": "ok", "lists": 2},
                       lists_provider=lambda: [{"list": "a", "version": 3}, {"list": "b", "version": 1}])
    assert _lines(console, "status\n") == ['{"lists": 2, "state": "ok"}', "ok"]
    assert _lines(console, "  lists  \n") == ['{"list": "a", "version": 3}', '{"list": "b", "version": 1}', "ok"]
    assert _lines(_console(lists_provider=lambda: []), "lists\n") == ["ok"]


def test_default_status_says_no_daemon_is_attached():
    lines = _lines(_console(), "status\n")
    assert lines[-1] == "ok" and "no daemon attached" in json.loads(lines[0])["agent"]


def test_arguments_are_refused():
    assert _lines(_console(), "status now\n") == ["error: status takes no arguments; try: help"]


def test_a_failing_provider_is_an_error_line_not_a_crash():
    def broken():
        raise RuntimeError("spool unreadable")
    console = _console(status_provider=broken, lists_provider=lambda: ["not a dict"])
    assert _lines(console, "status\n") == ["error: status failed: RuntimeError: spool unreadable"]
    assert _lines(console, "lists\n") == ["error: lists failed: TypeError: lists provider returned a str item, expected dicts"]
    assert _lines(console, "version\n")[-1] == "ok"


def test_garbage_bytes_get_one_error_each_and_the_console_goes_on():
    lines = _lines(_console(), b"\xff\xfe\x80garbage\n\x00\x01\x02\nversion\n")
    assert lines[0] == "error: line is not valid UTF-8 (10 bytes discarded); type a command, try: help"
    assert lines[1] == "error: line contains control characters; discarded, try: help"
    assert lines[-1] == "ok"


def test_overlong_line_is_discarded_and_said():
    lines = _lines(_console(), b"A" * (MAX_LINE * 4) + b"\nversion\n")
    assert lines[0] == "error: line too long (over %d bytes); discarded up to the next newline" % MAX_LINE
    assert lines[-1] == "ok" and len(lines) == 3


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_get_only_well_formed_replies(data):
    console = _console()
    out = console.handle_bytes(data + b"\nversion\n")
    lines = out.decode("utf-8").split("\r\n")
    assert lines[-1] == "" and lines[-2] == "ok"  # still answering after whatever came before
    for line in lines[:-1]:
        assert line == "ok" or line.startswith(("error: ", "{", "status", "lists", "version", "selftest", "help"))
        assert len(line) < 1000


def test_selftest_relays_pass_and_fail():
    assert _lines(_console(selftest=lambda: (True, "known image matched")), "selftest\n") == [
        "selftest passed: known image matched", "ok"]
    assert _lines(_console(selftest=lambda: (False, "list signature refused")), "selftest\n") == [
        "error: selftest failed: list signature refused"]


def test_selftest_unavailable_without_agent_selftest(monkeypatch):
    monkeypatch.setitem(sys.modules, "agent.selftest", None)  # import now raises ImportError
    (line,) = _lines(_console(), "selftest\n")
    assert line.startswith("error: selftest unavailable: agent.selftest cannot be imported")


def test_default_selftest_is_the_agents(monkeypatch):
    selftest = pytest.importorskip("agent.selftest", reason="agent.selftest (the lead's) is not in this tree yet")
    real, seen = selftest.run_selftest, []

    def recording():
        seen.append(real())
        return seen[-1]
    monkeypatch.setattr(selftest, "run_selftest", recording)
    lines = _lines(_console(), "selftest\n")
    (ok, detail), = seen  # the console called the agent's real selftest, once
    # ...and relays its verdict faithfully, whichever it is.
    if ok:
        assert lines == ["selftest passed: %s" % detail, "ok"]
    else:
        assert lines == ["error: selftest failed: %s" % detail]


def test_status_file_providers(tmp_path):
    path = tmp_path / "status.json"
    source = StatusFile(str(path))
    console = _console(status_provider=source.status, lists_provider=source.lists)
    (line,) = _lines(console, "status\n")
    assert line.startswith("error: status failed: RuntimeError: no status at") and "is the agent running?" in line
    path.write_text(json.dumps({"agent": "0.1.0", "lists": {"hub/b": {"version": 2}, "hub/a": {"version": 7}}}))
    assert json.loads(_lines(console, "status\n")[0])["agent"] == "0.1.0"
    assert _lines(console, "lists\n") == ['{"list": "hub/a", "version": 7}', '{"list": "hub/b", "version": 2}', "ok"]
    path.write_text("{torn")
    assert _lines(console, "lists\n")[0].startswith("error: lists failed: RuntimeError: status file")


def test_bad_port_url_argument():
    with pytest.raises(ValueError, match="pyserial URL"):
        Console("")


# ------------------------------------------------------------------ over loop://


def _talk_loop(console, data):
    """Write as the terminal, let the console answer once, read its answer back off the loop."""
    console.port.write(data)
    console.poll_once()
    time.sleep(0.01)
    return console.port.read(console.port.in_waiting).decode()


def test_over_loop_url():
    console = Console("loop://", status_provider=lambda: {"state": "ok"}, read_timeout=0.05)
    console.open()
    assert _talk_loop(console, b"status\r\n") == '{"state": "ok"}\r\nok\r\n'
    assert _talk_loop(console, b"\xff\xff\n") .startswith("error: line is not valid UTF-8")
    assert _talk_loop(console, b"nope\n") == "error: unknown command 'nope'; try: help\r\n"


def test_over_loop_url_survives_a_closed_port():
    console = Console("loop://", read_timeout=0.05, reopen_delay=0.0)
    console.open()
    console.port.write(b"vers")  # half a line, then the port dies
    console.poll_once()
    console.port.close()
    console.poll_once()
    assert console.disconnects == 1 and console.port is None
    console.poll_once()  # reopens
    assert console.opens == 2
    assert _talk_loop(console, b"ion\nversion\n").splitlines()[0].startswith("error: unknown command 'ion'")


# ------------------------------------------------------------------ over a real pty


class Terminal:
    """The other end of a pty: what a person at a serial terminal would type and see."""

    def __init__(self, link):
        import tty
        self.master, self.slave = os.openpty()
        self.slave_name = os.ttyname(self.slave)
        # Raw from the start (no echo of what is typed before the console opens it), and held
        # open so the master does not read EIO while no one else has the slave open.
        tty.setraw(self.slave)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(self.slave_name, link)

    def send(self, data):
        os.write(self.master, data)

    def read_reply(self, timeout=10.0):
        """Read until a final line (ok / error: ...) arrives."""
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                buf += os.read(self.master, 4096)
                lines = buf.decode("utf-8", "replace").split("\r\n")
                if any(line == "ok" or line.startswith("error: ") for line in lines[:-1]):
                    return lines[:-1]
        raise AssertionError("no complete reply within %.0fs; got %r" % (timeout, buf))

    def close(self):
        os.close(self.master)
        os.close(self.slave)


def _wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in %.0fs" % timeout)


@pytest.fixture
def pty_console(tmp_path):
    link = str(tmp_path / "ttyGW0")
    term = Terminal(link)
    console = Console(link, status_provider=lambda: {"state": "ok"}, read_timeout=0.05, reopen_delay=0.05)
    thread = threading.Thread(target=console.serve_forever, daemon=True)
    thread.start()
    _wait(lambda: console.opens >= 1)
    yield console, term, link
    console.stop()
    thread.join(5)
    try:
        term.close()
    except OSError:
        pass


def test_over_a_pty(pty_console):
    console, term, _link = pty_console
    term.send(b"status\r")
    assert term.read_reply() == ['{"state": "ok"}', "ok"]
    term.send(b"\xc3\x28\xa0\xa1 bad\r\n")
    assert term.read_reply() == ["error: line is not valid UTF-8 (8 bytes discarded); type a command, try: help"]
    term.send(b"Z" * 5000 + b"\r\n")
    assert term.read_reply()[0].startswith("error: line too long")
    term.send(b"help\r\n")
    assert term.read_reply()[-1] == "ok"


def test_pty_unplugged_and_replugged(pty_console):
    console, term, link = pty_console
    term.send(b"version\n")
    assert term.read_reply()[-1] == "ok"
    term.close()  # the adapter is unplugged: the console's reads fail
    _wait(lambda: console.disconnects >= 1)
    new_term = Terminal(link)  # plugged back in (a new device node behind the same name)
    try:
        _wait(lambda: console.opens >= 2)
        new_term.send(b"status\n")
        assert new_term.read_reply() == ['{"state": "ok"}', "ok"]
    finally:
        new_term.close()


def test_module_entry_point_over_a_pty(tmp_path):
    link = str(tmp_path / "ttyGW1")
    term = Terminal(link)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-m", "agent.console", "--port", link, "--state-dir", str(tmp_path)],
                            cwd=root, stderr=subprocess.PIPE, text=True)
    try:
        (tmp_path / "status.json").write_text('{"agent": "0.1.0", "lists": {}}')
        deadline = time.monotonic() + 20
        reply = None
        while time.monotonic() < deadline and reply is None:
            term.send(b"status\n")
            try:
                reply = term.read_reply(timeout=1.0)
            except AssertionError:
                pass
        assert reply == ['{"agent": "0.1.0", "lists": {}}', "ok"]
        term.send(b"lists\n")
        assert term.read_reply() == ["ok"]
    finally:
        proc.terminate()
        proc.wait(10)
        term.close()


def test_module_entry_point_refuses_a_bad_url():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "agent.console", "--port", "nosuch://x"], cwd=root,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "cannot use console port 'nosuch://x'" in proc.stderr
