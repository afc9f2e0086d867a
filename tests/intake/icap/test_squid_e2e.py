"""End to end with a real Squid (Debian package), the real scanner and a signed demo list.

curl -> Squid -> (ICAP) python -m agent.intake.icap -> Squid -> curl; the origin is python http.server.
All on 127.0.0.1 with ports picked at run time. Images are generated (agent.hashing.samples), never real.
"""

import hashlib
import os
import time

import pytest

from agent.intake.blockpage import PLACEHOLDER_PNG
from agent.hashing.samples import encode, generate_image
from tests.intake.icap.realservers import AgentProcess, Origin, Squid, curl, demo_lists, find_binary

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_binary("squid", "/usr/sbin/squid") is None or find_binary("curl") is None,
                       reason="squid/curl missing: run tests/setup/install.sh (tests/setup/apt-icap.txt)"),
]

BIG = 50 * 1024 * 1024


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Origin files, a signed list of two of the images, and the list folder."""
    work = tmp_path_factory.mktemp("squid-e2e")
    www = work / "www"
    www.mkdir()
    # Small listed images (< Squid's 64 KB buffer) get the 403 answer; a large one meets Squid 5.7's
    # stall (bug 5352) and gets the early head + placeholder picture (see agent/intake/icap/server.py).
    listed = {"listed%d.jpg" % i: encode(generate_image(1000 + i, (320, 240)), "JPEG") for i in range(2)}
    listed["listed-large.jpg"] = encode(generate_image(1002), "JPEG")
    assert max(len(v) for k, v in listed.items() if k != "listed-large.jpg") < 60000
    assert len(listed["listed-large.jpg"]) > 100000
    for name, data in listed.items():
        (www / name).write_bytes(data)
    (www / "mislabeled.bin").write_bytes(listed["listed0.jpg"])  # served as application/octet-stream
    (www / "clean.jpg").write_bytes(encode(generate_image(7), "JPEG"))
    (www / "clean.png").write_bytes(encode(generate_image(8, (320, 240)), "PNG"))
    (www / "page.txt").write_bytes(b"just text\n" * 1000)
    with open(www / "big.bin", "wb") as fh:  # 50 MB that is not an image (no magic, octet-stream)
        block = os.urandom(1 << 20)
        for i in range(BIG >> 20):
            fh.write(b"\x00NOTIMG" + block[7:])
    lists_dir, pub = demo_lists(str(work), listed)
    origin = Origin(str(www))
    yield work, www, origin, lists_dir, pub
    origin.stop()


@pytest.fixture
def stack(site, tmp_path):
    started = []

    def make(preview=True):
        work, www, origin, lists_dir, pub = site
        agent = AgentProcess("agent.intake.icap", lists_dir, pub, "--reload", "0")
        started.append(agent)
        squid = Squid(str(tmp_path), icap_port=agent.port, preview=preview)
        started.append(squid)
        return agent, squid, origin, www

    yield make
    for thing in reversed(started):
        thing.stop()


def test_blocks_listed_passes_the_rest(stack, tmp_path):
    agent, squid, origin, www = stack(preview=True)
    out = str(tmp_path / "out")
    # A listed image, fetched as an <img> would: 403 with the placeholder image.
    status, _ = curl(squid.proxy, origin.url("listed0.jpg"), out, "-H", "Accept: image/*")
    body = open(out, "rb").read()
    assert status == 403 and b"Blocked image" in body, (status, body[:200], squid.cache_log()[-1500:])
    # The same, navigated to by a browser: the explanation page.
    status, _ = curl(squid.proxy, origin.url("listed1.jpg"), out, "-H", "Accept: text/html,*/*;q=0.8")
    page = open(out, "rb").read()
    assert status == 403 and b"known child sexual abuse material" in page and b"<a href=" in page
    # Served with a lying type: the magic bytes still get it scanned and blocked.
    status, _ = curl(squid.proxy, origin.url("mislabeled.bin"), out)
    assert status == 403
    # A large listed image: whatever the status, the client never gets the picture.
    status, _ = curl(squid.proxy, origin.url("listed-large.jpg"), out)
    got = open(out, "rb").read()
    assert got in (PLACEHOLDER_PNG,) or (status == 403 and b"Blocked image" in got), (status, got[:100])
    assert sha(out) != sha(str(www / "listed-large.jpg"))
    # Unrelated images arrive byte-identical.
    for name in ("clean.jpg", "clean.png"):
        status, _ = curl(squid.proxy, origin.url(name), out)
        assert status == 200 and sha(out) == sha(str(www / name)), name
    # A non-image passes untouched.
    status, _ = curl(squid.proxy, origin.url("page.txt"), out)
    assert status == 200 and sha(out) == sha(str(www / "page.txt"))


@pytest.mark.parametrize("preview", [True, False], ids=["preview", "no-preview-streamed-echo"])
def test_50mb_non_image_streams_with_flat_memory(stack, tmp_path, preview):
    agent, squid, origin, www = stack(preview=preview)
    out = str(tmp_path / "big")
    curl(squid.proxy, origin.url("clean.jpg"), out)  # warm up: pool threads, scanner, lists loaded
    before = agent.rss_kb("VmHWM")
    status, size = curl(squid.proxy, origin.url("big.bin"), out, "--limit-rate", "200M")
    grown = agent.rss_kb("VmHWM") - before
    assert status == 200 and size == BIG and sha(out) == sha(str(www / "big.bin"))
    # Flat: the agent's peak RSS grows by far less than the body (a copy would be +50 MB).
    assert grown < 8 * 1024, "agent peak RSS grew by %d KB while 50 MB passed" % grown


def test_agent_killed_browsing_goes_on(stack, tmp_path):
    agent, squid, origin, www = stack(preview=True)
    out = str(tmp_path / "out")
    assert curl(squid.proxy, origin.url("listed0.jpg"), out)[0] == 403  # the service was in use
    agent.kill()
    time.sleep(0.2)
    for name in ("clean.jpg", "page.txt", "listed0.jpg"):
        status, _ = curl(squid.proxy, origin.url(name), out, timeout=60)
        assert status == 200 and sha(out) == sha(str(www / name)), (name, status, squid.cache_log()[-1500:])
