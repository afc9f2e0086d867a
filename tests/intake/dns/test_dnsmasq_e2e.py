"""Real dnsmasq (Debian package) forwarding to the agent's DNS forwarder on loopback, with a local test
resolver as the upstream: a listed benign name gets the block answer, an unlisted one the upstream's
answer; with the agent killed, resolution continues through dnsmasq's next server.

dnsmasq is configured as firmware/openwrt/gatewatch/files/gatewatch.dnsmasq sets it up on a router:
the agent first, strict-order, the real upstream after it.
"""

import os
import signal
import subprocess
import sys

import pytest

from agent.lists.names import read_names
from tests import paths
from tests.listkit import Hub
from tests.waiting import free_port, stop_process, wait_port

ROOT = str(paths.ROOT)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (os.path.exists("/usr/sbin/dnsmasq") and os.path.exists("/usr/bin/dig")),
                       reason="dnsmasq/dig missing: run tests/setup/install.sh (tests/setup/apt-dns.txt)"),
]


def start(cmd):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    line = proc.stdout.readline().decode()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError("did not start: %r %r" % (line, proc.stderr.read()[-2000:]))
    return proc, int(line.rsplit(":", 1)[1])


def dig(port, name, *opts):
    r = subprocess.run(["dig", "@127.0.0.1", "-p", str(port), name, "+tries=4", "+time=1"] + list(opts),
                       capture_output=True, text=True, timeout=30)
    status = [ln for ln in r.stdout.splitlines() if "status:" in ln]
    answers = [ln.split()[-1] for ln in r.stdout.splitlines()
               if ln and not ln.startswith(";") and len(ln.split()) >= 5 and ln.split()[3] in ("A", "AAAA")]
    return (status[0].split("status:")[1].split(",")[0].strip() if status else None), answers


def test_dnsmasq_forwards_to_the_agent_and_falls_back_when_it_is_killed(tmp_path):
    hub = Hub(tmp_path / "hub", source="hotline")
    hub.build(read_names("blocked.example.org\n", "domain", "doms"), name="doms", signal="domain", capacity=10)
    procs = []
    try:
        up, up_port = start([sys.executable, "-m", "tests.intake.dns.upstream", "--port", "0"])
        procs.append(up)
        agent, agent_port = start([sys.executable, "-m", "agent.intake.dns", "--listen", "127.0.0.1:0",
                                   "--upstream", "127.0.0.1:%d" % up_port, "--lists", hub.out, "--trust",
                                   hub.pub_path, "--reload", "0"])
        procs.append(agent)
        port = free_port()
        dm = subprocess.Popen(["dnsmasq", "-k", "--conf-file=/dev/null", "--port=%d" % port,
                               "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                               "--strict-order", "--pid-file=", "--user=nobody",
                               "--server=127.0.0.1#%d" % agent_port, "--server=127.0.0.1#%d" % up_port],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(dm)
        wait_port(port, 10, dm)

        assert dig(port, "blocked.example.org") == ("NXDOMAIN", [])
        assert dig(port, "cdn.Blocked.Example.org", "AAAA") == ("NXDOMAIN", [])  # subdomains, any case
        assert dig(port, "www.example.org") == ("NOERROR", ["203.0.113.7"])
        assert dig(port, "www.example.org", "AAAA") == ("NOERROR", ["2001:db8::7"])
        assert dig(port, "www.example.org", "+tcp") == ("NOERROR", ["203.0.113.7"])

        agent.send_signal(signal.SIGKILL)  # no clean shutdown: the port just goes dead
        agent.wait(10)
        # dnsmasq moves to its next server when the client asks again (dig retries after 1 s)
        assert dig(port, "after.example.org") == ("NOERROR", ["203.0.113.7"])
        # fail-open, as documented: with the agent down a listed name resolves too (nothing to count it)
        assert dig(port, "other.blocked.example.org") == ("NOERROR", ["203.0.113.7"])
    finally:
        for p in reversed(procs):
            stop_process(p, 5)
