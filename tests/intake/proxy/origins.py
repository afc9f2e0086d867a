"""A scripted loopback origin for proxy tests: each path answers with what the test says; it records requests."""

from __future__ import annotations

import http.server
import threading


class ScriptedOrigin:
    """``routes[path] = fn(request_headers: dict, body: bytes) -> (status, [(name, value)], body)``.

    ``seen`` holds (method, path, headers dict with lower-case names, body) for every request. A
    route may return ``raw`` bytes instead (a 1-tuple) to send exactly those and close.
    """

    def __init__(self, routes=None):
        self.routes = dict(routes or {})
        self.seen = []
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _any(self):
                headers = {k.lower(): v for k, v in self.headers.items()}
                body = b""
                if "content-length" in headers:
                    body = self.rfile.read(int(headers["content-length"]))
                elif headers.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b""):
                                pass
                            break
                        body += self.rfile.read(size)
                        self.rfile.readline()
                path = self.path.split("?")[0]
                origin.seen.append((self.command, self.path, headers, body))
                route = origin.routes.get(path)
                if route is None:
                    status, fields, out = 404, [("Content-Type", "text/plain")], b"not here"
                else:
                    answer = route(headers, body)
                    if len(answer) == 1:
                        self.wfile.write(answer[0])
                        self.close_connection = True
                        return
                    status, fields, out = answer
                self.send_response_only(status)
                names = {k.lower() for k, _ in fields}
                for k, v in fields:
                    self.send_header(k, v)
                if "content-length" not in names and "transfer-encoding" not in names:
                    self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)

            do_GET = do_POST = do_HEAD = do_PUT = _any

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # clients hanging up mid-answer are the point
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def ranged(body: bytes, ctype: str = "image/jpeg"):
    """A route that honours single byte ranges (206) the way real servers do."""

    def route(headers, _):
        rng = headers.get("range")
        if rng and rng.startswith("bytes=") and "," not in rng:
            first, _, last = rng[6:].partition("-")
            first = int(first)
            last = int(last) if last else len(body) - 1
            part = body[first:last + 1]
            return 206, [("Content-Type", ctype), ("Content-Range", "bytes %d-%d/%d" % (first, last, len(body)))], part
        if rng:  # several ranges: multipart/byteranges
            out = b""
            for spec in rng[6:].split(","):
                first, _, last = spec.strip().partition("-")
                first, last = int(first), int(last) if last else len(body) - 1
                out += (b"--SEP\r\nContent-Type: %s\r\nContent-Range: bytes %d-%d/%d\r\n\r\n"
                        % (ctype.encode(), first, last, len(body))) + body[first:last + 1] + b"\r\n"
            out += b"--SEP--\r\n"
            return 206, [("Content-Type", "multipart/byteranges; boundary=SEP")], out
        return 200, [("Content-Type", ctype), ("Accept-Ranges", "bytes")], body

    return route


def raw_request(port, data: bytes, timeout=10, source=None) -> bytes:
    """Send ``data`` to the proxy, read until it closes (or ``timeout`` of silence)."""
    import socket
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                 source_address=(source, 0) if source else None)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def split_response(raw: bytes):
    """(status, head bytes, body bytes) of one response; status 0 when there is none."""
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        return int(head.split(b" ")[1]), head, body
    except (IndexError, ValueError):
        return 0, head, body


def responses(raw: bytes):
    """Every response with a Content-Length in ``raw``, in order: [(status, head, body)]."""
    out = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if not sep:
            break
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        out.append((int(head.split(b" ")[1]), head, rest[:length]))
        raw = rest[length:]
    return out
