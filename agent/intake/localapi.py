"""The local check API: a Unix socket where other programs on the device ask for a verdict.

Owns the socket and its line protocol; it hands bodies to an ``agent.intake.Inspector`` and answers
with the decision. Must not hash, match or decide itself. Requests are JSON lines, answered by one
JSON line each, on a connection that may carry many requests::

    {"path": "/tmp/x.jpg", "url": "http://host/x.jpg", "content_type": "image/jpeg"}
    {"bytes": 12345, "url": "http://host/x.jpg"}   followed by exactly 12345 raw bytes
    {"cmd": "status"}                               the daemon's status (when it gives one)

    -> {"action": "block"|"allow", "reason": ..., "verdict": ..., ["source", "list", "version",
        "signal", "distance"]}
    -> {"error": "what was wrong"}                  bad request; the connection stays usable

The socket file is created with mode 0660, so only root and the socket's group may ask. The caller
is a program on the device, so the answer carries nothing the caller does not already have; the
logs still carry no client data.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import stat
import threading
from typing import Callable, Optional

from agent.core.errors import ConfigError

log = logging.getLogger("gatewatch.localapi")

MAX_LINE = 64 * 1024
DEFAULT_MAX_BYTES = 32 * 1024 * 1024


def decision_json(decision) -> dict:
    """The answer for one Decision (no hashes in it)."""
    out = {}
    result = decision.result
    if result is not None and hasattr(result, "to_json"):
        out.update({k: v for k, v in result.to_json().items() if k != "path"})
        if "reason" in out:
            out["detail"] = out.pop("reason")
    out.update(action=decision.action, reason=decision.reason)
    return out


class _Handler(socketserver.StreamRequestHandler):
    def handle(self):
        api: LocalApi = self.server.api
        while True:
            line = self.rfile.readline(MAX_LINE + 1)
            if not line:
                return
            if len(line) > MAX_LINE:
                self._send({"error": "request line longer than %d bytes" % MAX_LINE})
                return
            if not line.strip():
                continue
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("not an object")
            except ValueError:
                self._send({"error": "request is not a JSON object; send {\"path\": ...} or {\"bytes\": N}"})
                continue
            try:
                answer = api.answer(req, self.rfile)
            except _Fatal as exc:
                self._send({"error": str(exc)})
                return
            self._send(answer)

    def _send(self, obj):
        try:
            self.wfile.write(json.dumps(obj, sort_keys=True).encode() + b"\n")
            self.wfile.flush()
        except OSError:
            pass


class _Fatal(Exception):
    """The connection cannot go on (a body that never came)."""


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True


class LocalApi:
    """Serves ``inspector`` on a Unix socket at ``path`` from a thread. ``start()``, ``close()``."""

    def __init__(self, path: str, inspector, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 status: Optional[Callable[[], dict]] = None, mode: int = 0o660):
        if not path:
            raise ConfigError("local API socket path is empty")
        self.path = path
        self.inspector = inspector
        self.max_bytes = max_bytes
        self.status = status
        self.mode = mode
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self.requests = 0

    def start(self) -> "LocalApi":
        if os.path.exists(self.path):
            if not stat.S_ISSOCK(os.stat(self.path).st_mode):
                raise ConfigError("%s exists and is not a socket; remove it or choose another path" % self.path)
            if _alive(self.path):
                raise ConfigError("%s is in use by another running agent" % self.path)
            os.unlink(self.path)  # a stale socket from a crash
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._server = _Server(self.path, _Handler)
        os.chmod(self.path, self.mode)
        self._server.api = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="gatewatch-localapi",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def answer(self, req: dict, rfile) -> dict:
        """The answer to one parsed request (reads the body from ``rfile`` for ``bytes``)."""
        self.requests += 1
        if req.get("cmd") == "status":
            return self.status() if self.status else {"error": "status is not available here"}
        url = req.get("url")
        ctype = req.get("content_type")
        if url is not None and not isinstance(url, str) or ctype is not None and not isinstance(ctype, str):
            return {"error": "url and content_type must be strings"}
        if "path" in req:
            path = req["path"]
            if not isinstance(path, str) or not path:
                return {"error": "path must be a non-empty string"}
            try:
                size = os.path.getsize(path)
                if size > self.max_bytes:
                    return {"error": "file is %d bytes, over the %d-byte limit" % (size, self.max_bytes)}
                with open(path, "rb") as f:
                    body = f.read(self.max_bytes + 1)
            except OSError as exc:
                return {"error": "cannot read %s: %s" % (path, exc.strerror)}
        elif "bytes" in req:
            n = req["bytes"]
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                return {"error": "bytes must be a non-negative integer"}
            if n > self.max_bytes:
                raise _Fatal("body of %d bytes is over the %d-byte limit; closing" % (n, self.max_bytes))
            body = rfile.read(n)
            if len(body) != n:
                raise _Fatal("body ended after %d of %d bytes" % (len(body), n))
        else:
            return {"error": "send {\"path\": ...}, {\"bytes\": N} + body, or {\"cmd\": \"status\"}"}
        return decision_json(self.inspector.inspect(body, ctype, url))


def _alive(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(0.5)
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class LocalApiClient:
    """A small client for tools, tests and the demo."""

    def __init__(self, path: str, timeout: float = 30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.rfile = self.sock.makefile("rb")

    def _ask(self, req: dict, body: bytes = b"") -> dict:
        self.sock.sendall(json.dumps(req).encode() + b"\n" + body)
        line = self.rfile.readline()
        if not line:
            raise ConnectionError("local API closed the connection")
        return json.loads(line)

    def check_bytes(self, body: bytes, url: Optional[str] = None, content_type: Optional[str] = None) -> dict:
        req = {"bytes": len(body)}
        if url:
            req["url"] = url
        if content_type:
            req["content_type"] = content_type
        return self._ask(req, body)

    def check_path(self, path: str, url: Optional[str] = None) -> dict:
        req = {"path": path}
        if url:
            req["url"] = url
        return self._ask(req)

    def status(self) -> dict:
        return self._ask({"cmd": "status"})

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
