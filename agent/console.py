"""Serial management console: a line protocol over any pyserial URL (a UART, a pty, ``loop://``).

Owns the console protocol and keeping the port alive. It must not reach into the daemon: what it
reports comes from the providers it is given (``status_provider``, ``lists_provider``,
``selftest``), so the daemon plugs in without this module knowing its internals.

Protocol (hypercorn style, the parsing does no I/O: ``LineReader.feed`` and ``Console.handle_line``):

- A command is one line ended by CR, LF or CRLF; empty lines are ignored; backspace/DEL edit
  the line (terminals without local echo send them).
- Commands: ``status``, ``lists``, ``version``, ``selftest``, ``help``.
- A reply is zero or more body lines (JSON objects for status/lists/version) followed by one
  final line: ``ok``, or ``error: <what was wrong; what to do>``. Lines end with CRLF.
- Bad input never stops the console: non-UTF-8 bytes, control characters and lines longer than
  ``MAX_LINE`` bytes (discarded up to the next newline) each get one ``error:`` line.
- When the port fails (unplugged adapter, closed pty) the console closes it and reopens the same
  URL after ``reopen_delay`` seconds, for as long as it runs.

Run it: ``python -m agent.console --port URL [--baudrate N] [--state-dir DIR]`` (with a state
folder, status and lists come from the running agent's status.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading

from agent import __version__


try:
    import termios
    _TERMIOS_ERRORS = (termios.error,)
except ImportError:  # pragma: no cover - no termios (Windows)
    _TERMIOS_ERRORS = ()
log = logging.getLogger("gatewatch.console")

MAX_LINE = 256
COMMANDS = {
    "status": "agent state as one JSON object",
    "lists": "one JSON object per loaded list (source, list, signal, version, ...)",
    "version": "agent version as one JSON object",
    "selftest": "hash a built-in benign image and match it against a built-in signed test list",
    "help": "this text",
}

OVERLONG = object()  # LineReader event: a line exceeded MAX_LINE and was discarded


class LineReader:
    """Splits a byte stream into lines, capping their length.

    ``feed(data)`` returns a list of events: ``bytes`` for each complete line (without its
    terminator, empty lines dropped) and ``OVERLONG`` once per line that grew past ``max_line``
    bytes; the rest of such a line is discarded up to the next CR/LF.
    """

    def __init__(self, max_line=MAX_LINE):
        self.max_line = max_line
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data):
        events = []
        for byte in data:
            if byte in (0x0A, 0x0D):
                if self._discarding:
                    self._discarding = False
                elif self._buf:
                    events.append(bytes(self._buf))
                self._buf = bytearray()
            elif self._discarding:
                continue
            elif byte in (0x08, 0x7F):
                if self._buf:
                    self._buf.pop()
            else:
                self._buf.append(byte)
                if len(self._buf) > self.max_line:
                    events.append(OVERLONG)
                    self._buf = bytearray()
                    self._discarding = True
        return events


def _shown(text, limit=32):
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[:limit] + "..."


def _default_status():
    return {"agent": "console only (no daemon attached)", "version": __version__}


def _default_lists():
    return []


class StatusFile:
    """Status and lists providers that read the daemon's status.json (which it writes atomically).

    Why a file and not a call into the daemon: the console then runs as its own process (a procd
    instance on OpenWrt) and keeps answering while the agent restarts.
    """

    def __init__(self, path):
        self.path = path

    def _load(self):
        try:
            with open(self.path, "r", encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise RuntimeError("no status at %s; is the agent running?" % self.path) from None
        except ValueError as exc:
            raise RuntimeError("status file %s is not JSON: %s" % (self.path, exc)) from None
        if not isinstance(doc, dict):
            raise RuntimeError("status file %s does not hold an object" % self.path)
        return doc

    def status(self):
        """The whole status object."""
        return self._load()

    def lists(self):
        """One dict per list in the status (its key becomes ``list``)."""
        lists = self._load().get("lists") or {}
        if isinstance(lists, dict):
            return [dict(info, list=ident) for ident, info in sorted(lists.items())]
        return list(lists)


class Console:
    """The management console on one pyserial URL; ``serve_forever()`` runs it, ``stop()`` ends it."""

    def __init__(self, port_url, *, status_provider=None, lists_provider=None, selftest=None,
                 baudrate=115200, read_timeout=0.1, reopen_delay=1.0, max_line=MAX_LINE):
        if not isinstance(port_url, str) or not port_url:
            raise ValueError("console port must be a pyserial URL such as /dev/ttyS1 or loop://, got %r" % (port_url,))
        self.port_url = port_url
        self.baudrate = baudrate
        self.read_timeout = read_timeout
        self.reopen_delay = reopen_delay
        self.status_provider = status_provider or _default_status
        self.lists_provider = lists_provider or _default_lists
        self._selftest = selftest
        self.reader = LineReader(max_line)
        self.port = None
        self.opens = 0
        self.disconnects = 0
        self._stop = threading.Event()

    # ------------------------------------------------------------ protocol (no I/O)

    def handle_line(self, raw):
        """Reply lines (str, without terminators) for one received line (bytes) or OVERLONG."""
        if raw is OVERLONG:
            return ["error: line too long (over %d bytes); discarded up to the next newline" % self.reader.max_line]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            return ["error: line is not valid UTF-8 (%d bytes discarded); type a command, try: help" % len(raw)]
        if any(not ch.isprintable() and ch != "\t" for ch in line):
            return ["error: line contains control characters; discarded, try: help"]
        words = line.split()
        if not words:
            return []
        command, args = words[0], words[1:]
        if command not in COMMANDS:
            return ["error: unknown command '%s'; try: help" % _shown(command)]
        if args:
            return ["error: %s takes no arguments; try: help" % command]
        try:
            return getattr(self, "_cmd_" + command)()
        except Exception as exc:  # a provider failing must not take the console down
            log.exception("console command %s failed", command)
            return ["error: %s failed: %s: %s" % (command, type(exc).__name__, _shown(str(exc), 200))]

    def _cmd_help(self):
        width = max(len(c) for c in COMMANDS)
        return ["%-*s  %s" % (width, c, text) for c, text in COMMANDS.items()] + ["ok"]

    def _cmd_version(self):
        return [json.dumps({"agent_version": __version__, "python": sys.version.split()[0]}, sort_keys=True), "ok"]

    def _cmd_status(self):
        status = self.status_provider()
        if not isinstance(status, dict):
            raise TypeError("status provider returned %s, expected a dict" % type(status).__name__)
        return [json.dumps(status, sort_keys=True, default=str), "ok"]

    def _cmd_lists(self):
        lists = list(self.lists_provider())
        for item in lists:
            if not isinstance(item, dict):
                raise TypeError("lists provider returned a %s item, expected dicts" % type(item).__name__)
        return [json.dumps(item, sort_keys=True, default=str) for item in lists] + ["ok"]

    def _cmd_selftest(self):
        selftest = self._selftest
        if selftest is None:
            try:
                from agent.selftest import run_selftest
            except ImportError as exc:
                return ["error: selftest unavailable: agent.selftest cannot be imported (%s)" % _shown(str(exc), 120)]
            selftest = run_selftest
        ok, detail = selftest()
        if ok:
            return ["selftest passed: %s" % _shown(str(detail), 400), "ok"]
        return ["error: selftest failed: %s" % _shown(str(detail), 400)]

    def handle_bytes(self, data):
        """Reply bytes for received ``data`` (any chunking)."""
        out = []
        for event in self.reader.feed(data):
            out.extend(self.handle_line(event))
        return "".join(line + "\r\n" for line in out).encode("utf-8")

    # ------------------------------------------------------------ port handling

    def open(self):
        """Open (or reopen) the port; raises serial.SerialException when it cannot."""
        import serial
        self.port = serial.serial_for_url(self.port_url, baudrate=self.baudrate, timeout=self.read_timeout)
        self.reader = LineReader(self.reader.max_line)  # a half line from before a disconnect is stale
        self.opens += 1
        log.info("console listening on %s", self.port_url)

    def _drop_port(self, exc):
        self.disconnects += 1
        log.warning("console port %s failed (%s); reopening in %.1fs", self.port_url, exc, self.reopen_delay)
        try:
            self.port.close()
        except Exception:  # closing a dead port may fail too; it is gone either way
            pass
        self.port = None

    def poll_once(self):
        """Read what arrived (waiting up to read_timeout), answer it; reopen a failed port. True if bytes came."""
        import serial
        if self.port is None:
            try:
                self.open()
            except (serial.SerialException, OSError, ValueError) as exc:
                log.warning("cannot open console port %s: %s", self.port_url, exc)
                self._stop.wait(self.reopen_delay)
                return False
        try:
            data = self.port.read(max(1, self.port.in_waiting))
            if not data:
                return False
            reply = self.handle_bytes(data)
            if reply:
                self.port.write(reply)
                self.port.flush()
            return True
        except (serial.SerialException, OSError, ValueError, AttributeError, TypeError) + _TERMIOS_ERRORS as exc:
            # A closed pyserial port raises PortNotOpenError, or ValueError/TypeError from its fd; a
            # pty whose other end went away mid-write fails tcdrain() with termios.error (not an OSError).
            if self._stop.is_set():
                return False
            self._drop_port(exc)
            self._stop.wait(self.reopen_delay)
            return False

    def serve_forever(self):
        """Answer commands until stop()."""
        while not self._stop.is_set():
            self.poll_once()
        if self.port is not None:
            try:
                self.port.close()
            except Exception:
                pass

    def stop(self):
        """Make serve_forever() return."""
        self._stop.set()


def main(argv=None):
    """``python -m agent.console --port URL``: run the console until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m agent.console", description="gatewatch serial management console")
    parser.add_argument("--port", required=True, help="pyserial URL or device, e.g. /dev/ttyS1, loop://, socket://host:port")
    parser.add_argument("--baudrate", type=int, default=115200)
    parser.add_argument("--reopen-delay", type=float, default=1.0, help="seconds between reopen attempts")
    parser.add_argument("--state-dir", help="the agent's state folder: answer status/lists from its status.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        import serial  # noqa: F401
    except ImportError:  # pragma: no cover - pyserial is in the serial and test extras
        print("pyserial is not installed; pip install 'gatewatch[serial]'", file=sys.stderr)
        return 2
    import serial
    providers = {}
    if args.state_dir:
        import os
        source = StatusFile(os.path.join(args.state_dir, "status.json"))
        providers = {"status_provider": source.status, "lists_provider": source.lists}
    console = Console(args.port, baudrate=args.baudrate, reopen_delay=args.reopen_delay, **providers)
    try:
        console.open()
    except ValueError as exc:  # unknown URL scheme or bad setting: retrying cannot help
        print("cannot use console port %r: %s" % (args.port, exc), file=sys.stderr)
        return 2
    except serial.SerialException as exc:  # not there yet (USB adapter unplugged): keep trying
        log.warning("cannot open console port %s yet: %s; retrying", args.port, exc)
    try:
        console.serve_forever()
    except KeyboardInterrupt:
        console.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
