"""A real PostgreSQL cluster for tests: initdb and pg_ctl from Debian's `postgresql` package, run as an
unprivileged user (``nobody`` when the tests run as root: initdb refuses root), on a free loopback
port, in a temporary folder, with trust authentication on loopback only. ``database()`` hands each
test a fresh database.
"""
from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile

import pytest

from tests.waiting import free_port


def pg_bin() -> str:
    """The newest /usr/lib/postgresql/<major>/bin, or fail with the set-up hint."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        pytest.fail("PostgreSQL is not installed: run tests/setup/install.sh (apt-get install postgresql)")
    return os.path.dirname(found[-1])


class PostgresCluster:
    """``start()``, ``stop()``, ``database() -> URL`` (a new empty database each call)."""

    def __init__(self) -> None:
        self.bin = pg_bin()
        self.folder = tempfile.mkdtemp(prefix="gatewatch-pg-")
        os.chmod(self.folder, 0o755)
        self.data = os.path.join(self.folder, "data")
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam("nobody")
            os.chown(self.folder, self.user.pw_uid, self.user.pw_gid)
        self._n = itertools.count(1)

    def _run(self, *cmd, **kw):
        if self.user is not None:
            cmd = ("setpriv", "--reuid=%d" % self.user.pw_uid, "--regid=%d" % self.user.pw_gid, "--clear-groups") + cmd
        return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd=self.folder, env=dict(os.environ, LC_ALL="C", LANG="C"), **kw)

    def start(self) -> "PostgresCluster":
        try:
            self._run(os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "gatewatch", "--auth=trust",
                      "-E", "UTF8", "--no-locale", "--no-sync", timeout=120)
            self._run(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", os.path.join(self.folder, "log"),
                      "-w", "-t", "60", "-o", "-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=50"
                      % (self.port, self.folder), "start", timeout=90)
        except subprocess.CalledProcessError as e:
            log = ""
            try:
                with open(os.path.join(self.folder, "log")) as f:
                    log = f.read()[-2000:]
            except OSError:
                pass
            self.stop()
            pytest.fail("PostgreSQL did not start: %s\n%s\n%s" % (e, e.stdout, log))
        return self

    def url(self, db: str = "postgres") -> str:
        return "postgresql://gatewatch@127.0.0.1:%d/%s" % (self.port, db)

    def database(self) -> str:
        """A fresh empty database; its URL."""
        import psycopg
        name = "t%d" % next(self._n)
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute("CREATE DATABASE %s" % name)
        return self.url(name)

    def stop(self) -> None:
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            try:
                self._run(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop", timeout=60)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.folder, ignore_errors=True)
