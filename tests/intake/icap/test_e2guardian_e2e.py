"""e2guardian (Debian package) with its icapscan content scanner pointed at gatewatch, on loopback.

e2guardian runs as a direct proxy (no upstream); its content scanning sends each response body to
the ICAP service and treats a modified answer as "infected", replacing the content with its own block
answer (for images: its configured banned image). Images are generated; the list is a signed demo list.
"""

import hashlib

import pytest

from agent.hashing.samples import encode, generate_image
from tests.intake.icap.realservers import AgentProcess, E2Guardian, Origin, curl, demo_lists, find_binary

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_binary("e2guardian", "/usr/sbin/e2guardian") is None or find_binary("curl") is None,
                       reason="e2guardian/curl missing: run tests/setup/install.sh (tests/setup/apt-icap.txt)"),
]


def test_e2guardian_icapscan_blocks_listed_images(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    listed = {"small.jpg": encode(generate_image(3001, (320, 240)), "JPEG"),
              "large.jpg": encode(generate_image(3002), "JPEG")}
    for name, data in listed.items():
        (www / name).write_bytes(data)
    clean = encode(generate_image(3003), "JPEG")
    (www / "clean.jpg").write_bytes(clean)
    (www / "page.txt").write_bytes(b"plain text\n" * 500)
    lists_dir, pub = demo_lists(str(tmp_path), listed)
    origin = Origin(str(www))
    agent = AgentProcess("agent.intake.icap", lists_dir, pub, "--reload", "0")
    e2g = None
    try:
        e2g = E2Guardian(agent.port)
        out = str(tmp_path / "out")
        for name, data in listed.items():
            status, size = curl(e2g.proxy, origin.url(name), out)
            got = open(out, "rb").read()
            assert hashlib.sha256(got).digest() != hashlib.sha256(data).digest(), name
            assert len(got) < 1000, (name, status, got[:80])  # e2guardian's block answer, not the picture
        status, _ = curl(e2g.proxy, origin.url("clean.jpg"), out)
        assert status == 200 and open(out, "rb").read() == clean
        status, _ = curl(e2g.proxy, origin.url("page.txt"), out)
        assert status == 200 and open(out, "rb").read() == (www / "page.txt").read_bytes()
    finally:
        if e2g is not None:
            e2g.stop()
        agent.stop()
        origin.stop()
