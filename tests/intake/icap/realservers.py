"""Real servers for end-to-end tests and benchmarks: Squid, c-icap, a loopback origin, the agent CLI.

Everything listens on 127.0.0.1 on ports picked at run time; files live under a temp dir.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading

from tests import paths
from tests.waiting import free_port, stop_process, wait_port  # noqa: F401  (imported from here by tests)

ROOT = str(paths.ROOT)


def find_binary(name: str, *extra: str):
    for cand in (shutil.which(name),) + tuple(extra):
        if cand and os.path.exists(cand):
            return cand
    return None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body go out in separate writes: without this, Nagle + delayed ACKs add 40 ms per reply.
    disable_nagle_algorithm = True
    extensions_map = dict(http.server.SimpleHTTPRequestHandler.extensions_map,
                          **{".jpg": "image/jpeg", ".bin": "application/octet-stream", ".txt": "text/plain"})

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 128  # socketserver's 5 drops SYNs under 8 parallel clients: 1 s retransmits


class Origin:
    """python http.server on loopback serving ``directory`` (HTTP/1.1, keep-alive)."""

    def __init__(self, directory: str):
        handler = functools.partial(_QuietHandler, directory=directory)
        self.httpd = _Server(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return "http://127.0.0.1:%d/%s" % (self.port, name)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


SQUID_CONF = """\
http_port 127.0.0.1:{port}
pid_filename {dir}/squid.pid
cache_log {dir}/cache.log
access_log none
cache_store_log none
coredump_dir {dir}
cache deny all
cache_mem 8 MB
visible_hostname gatewatch-test
pinger_enable off
shutdown_lifetime 0 seconds
acl localnet src 127.0.0.1/32 ::1
http_access allow localnet
http_access deny all
{icap}
"""

SQUID_ICAP = """\
icap_enable on
icap_preview_enable {preview}
icap_persistent_connections on
icap_service_revival_delay 30
icap_service gw_resp respmod_precache icap://127.0.0.1:{icap_port}{icap_path} bypass=on
acl gw_never_images rep_mime_type -i ^video/ ^audio/ ^text/css ^application/javascript ^font/
adaptation_access gw_resp deny gw_never_images
adaptation_access gw_resp allow all
"""


class Squid:
    """Squid (the Debian package) in the foreground with its own config and folders under ``workdir``."""

    def __init__(self, workdir: str, icap_port=None, preview: bool = True, binary=None, extra_conf: str = "",
                 icap_path: str = "/respmod"):
        self.binary = binary or find_binary("squid", "/usr/sbin/squid")
        if self.binary is None:
            raise FileNotFoundError("squid is not installed: run tests/setup/install.sh (apt package squid)")
        # Squid drops root for its cache_effective_user (proxy), which cannot enter pytest's 0700 temp
        # folders: its folder is a world-writable temp dir of its own, removed on stop().
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="gw-squid-")
        os.chmod(self.dir, 0o777)
        self.port = free_port()
        icap = SQUID_ICAP.format(icap_port=icap_port, preview="on" if preview else "off",
                                 icap_path=icap_path) if icap_port else ""
        self.conf = os.path.join(self.dir, "squid.conf")
        with open(self.conf, "w") as fh:
            fh.write(SQUID_CONF.format(port=self.port, dir=self.dir, icap=icap) + extra_conf)
        self.log = open(os.path.join(self.dir, "stderr.log"), "wb")
        self.proc = subprocess.Popen([self.binary, "-N", "-f", self.conf], stdout=self.log, stderr=self.log)
        try:
            wait_port(self.port, 30, self.proc)
        except Exception:
            self.stop()
            raise RuntimeError("squid did not start: %s" % self.cache_log()[-2000:])

    @property
    def proxy(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def cache_log(self) -> str:
        try:
            with open(os.path.join(self.dir, "cache.log")) as fh:
                return fh.read()
        except OSError:
            return ""

    def stop(self):
        stop_process(self.proc, 15)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class AgentProcess:
    """``python -m agent.intake.icap`` (or agent.intake.proxy) as a child process; the port comes from its first line."""

    def __init__(self, module: str, lists_dir: str, trust: str, *extra: str):
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--listen", "127.0.0.1:0", "--lists", lists_dir, "--trust", trust]
            + list(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        line = self.proc.stdout.readline().decode()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError("agent did not start: %r %r" % (line, self.proc.stderr.read()[-2000:]))
        self.port = int(line.rsplit(":", 1)[1])
        self.pid = self.proc.pid

    def rss_kb(self, field: str = "VmRSS") -> int:
        with open("/proc/%d/status" % self.pid) as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise RuntimeError("no %s for pid %d" % (field, self.pid))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self):
        stop_process(self.proc, 10)


def hub(*args: str) -> str:
    """Run ``gatewatch-hub ARGS`` (as a module, so no install is assumed) and return its stdout."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m", "tools.hub_cli"] + list(args), cwd=ROOT, env=env,
                         capture_output=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError("gatewatch-hub %s failed: %s" % (" ".join(args), out.stderr.decode()[-2000:]))
    return out.stdout.decode()


def demo_lists(workdir: str, listed_images: dict) -> tuple:
    """Sign a sha256 demo list of ``listed_images`` {name: bytes}; returns (lists_dir, pubkey path)."""
    keys = os.path.join(workdir, "keys")
    src = os.path.join(workdir, "listed")
    out = os.path.join(workdir, "lists")
    for d in (keys, src, out):
        os.makedirs(d, exist_ok=True)
    for name, data in listed_images.items():
        with open(os.path.join(src, name), "wb") as fh:
            fh.write(data)
    hub("keys", "generate", "--out", keys, "--source", "demo")
    hub("lists", "build", "--source", "demo", "--list", "e2e", "--signal", "sha256", "--input", src,
        "--key", os.path.join(keys, "demo.key"), "--out", out, "--no-progress")
    return out, os.path.join(keys, "demo.pub")


def curl(proxy, url: str, out_path: str, *extra: str, timeout: float = 120):
    """Fetch ``url`` with curl (through ``proxy`` unless None); returns (http status, bytes written)."""
    cmd = ["curl", "-sS", "--max-time", str(int(timeout)), "-o", out_path, "-w", "%{http_code}"]
    if proxy:
        cmd += ["-x", proxy]
    else:
        cmd += ["--noproxy", "*"]
    res = subprocess.run(cmd + list(extra) + [url], capture_output=True, timeout=timeout + 10,
                         env=dict(os.environ, http_proxy="", HTTP_PROXY="", no_proxy=""))
    size = os.path.getsize(out_path) if os.path.exists(out_path) else 0
    return int(res.stdout or b"0"), size


C_ICAP_CONF = """\
PidFile {dir}/c-icap.pid
CommandsSocket {dir}/c-icap.ctl
Timeout 300
MaxKeepAliveRequests 0
KeepAliveTimeout 600
StartServers 1
MaxServers 1
MinSpareThreads 4
MaxSpareThreads 20
ThreadsPerChild 20
MaxRequestsPerChild 0
Port 127.0.0.1:{port}
TmpDir {dir}
MaxMemObject 131072
DebugLevel 0
Pipelining on
ModulesDir {libdir}
ServicesDir {libdir}
ServerLog {dir}/server.log
AccessLog {dir}/access.log
Service echo srv_echo.so
"""


class CIcap:
    """c-icap (Debian package) with its echo service: the C baseline. ``/echo`` on ``port``."""

    def __init__(self, workdir: str):
        binary = find_binary("c-icap", "/usr/bin/c-icap")
        if binary is None:
            raise FileNotFoundError("c-icap is not installed: run tests/setup/install.sh (apt package c-icap)")
        libdir = next((d for d in ("/usr/lib/x86_64-linux-gnu/c_icap", "/usr/lib/aarch64-linux-gnu/c_icap",
                                   "/usr/lib/c_icap") if os.path.exists(os.path.join(d, "srv_echo.so"))), None)
        self.dir = os.path.join(workdir, "c-icap")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        conf = os.path.join(self.dir, "c-icap.conf")
        with open(conf, "w") as fh:
            fh.write(C_ICAP_CONF.format(dir=self.dir, port=self.port, libdir=libdir))
        self.log = open(os.path.join(self.dir, "stderr.log"), "wb")
        self.proc = subprocess.Popen([binary, "-N", "-f", conf], stdout=self.log, stderr=self.log)
        wait_port(self.port, 20, self.proc)

    def stop(self):
        stop_process(self.proc, 10)
        self.log.close()


class E2Guardian:
    """e2guardian (Debian package) as a direct proxy with the icapscan content scanner -> gatewatch.

    Its stock configuration is copied to a world-readable temp folder (it drops root for its own user),
    paths rewritten, the listen port and the ICAP URL set, and AV-style content scanning enabled.
    """

    def __init__(self, icap_port: int, etc: str = "/etc/e2guardian"):
        import re
        import tempfile

        binary = find_binary("e2guardian", "/usr/sbin/e2guardian")
        if binary is None or not os.path.isdir(etc):
            raise FileNotFoundError("e2guardian is not installed: run tests/setup/install.sh (apt package e2guardian)")
        self.dir = tempfile.mkdtemp(prefix="gw-e2g-")
        os.chmod(self.dir, 0o777)
        conf_dir = os.path.join(self.dir, "etc")
        shutil.copytree(etc, conf_dir, symlinks=True)
        self.port = free_port()
        for base, _, files in os.walk(conf_dir):
            for name in files:
                path = os.path.join(base, name)
                if os.path.islink(path) or not (name.endswith((".conf", ".story")) or "lists" in base):
                    continue
                try:
                    with open(path) as fh:
                        text = fh.read()
                except (UnicodeDecodeError, OSError):
                    continue
                with open(path, "w") as fh:
                    fh.write(text.replace(etc, conf_dir))
        main = os.path.join(conf_dir, "e2guardian.conf")
        with open(main) as fh:
            text = fh.read()
        scanner = os.path.join(conf_dir, "contentscanners", "icapscan.conf")
        subs = [
            (r"(?m)^filterip =.*$", "filterip = 127.0.0.1"),
            (r"(?m)^filterports = .*$", "filterports = %d" % self.port),
            (r"(?m)^transparenthttpsport = .*$", ""),
            (r"(?m)^#contentscanner = '[^']*icapscan.conf'", "contentscanner = '%s'" % scanner),
            (r"(?m)^nodaemon = .*$", "nodaemon = on"),
            (r"(?m)^filecachedir = .*$", "filecachedir = '%s'" % self.dir),
            (r"(?m)^#?pidfilename = .*$", "pidfilename = '%s/e2g.pid'" % self.dir),
            (r"(?m)^#?loglocation = .*$", "loglocation = '%s/access.log'" % self.dir),
        ]
        for pat, rep in subs:
            text, n = re.subn(pat, rep, text, count=1)
            if n != 1:
                raise RuntimeError("e2guardian.conf has no line matching %s" % pat)
        with open(main, "w") as fh:
            fh.write(text)
        with open(scanner, "w") as fh:
            fh.write("plugname = 'icapscan'\nicapurl = 'icap://127.0.0.1:%d/respmod'\n" % icap_port)
        story = os.path.join(conf_dir, "site.story")
        with open(story) as fh:
            text = fh.read()
        # The stock story turns AV scanning off ("If you have av scanning enabled then comment out ...").
        text = text.replace("\nfunction(checknoscanlists)\nfunction(checknoscantypes)\n", "\n")
        with open(story, "w") as fh:
            fh.write(text)
        for base, dirs, files in os.walk(self.dir):
            for name in dirs + files:
                try:
                    os.chmod(os.path.join(base, name), 0o777 if name in dirs else 0o666)
                except OSError:
                    pass
        self.log = open(os.path.join(self.dir, "stderr.log"), "wb")
        self.proc = subprocess.Popen([binary, "-N", "-c", main], stdout=self.log, stderr=self.log)
        try:
            wait_port(self.port, 30, self.proc)
        except Exception:
            self.stop(remove=False)
            with open(os.path.join(self.dir, "stderr.log"), "rb") as fh:
                raise RuntimeError("e2guardian did not start: %r" % fh.read()[-2000:])

    @property
    def proxy(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def stop(self, remove: bool = True):
        stop_process(self.proc, 3)  # it can linger in worker shutdown; nothing to save: kill
        self.log.close()
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)
