"""The standalone entries (python -m agent.intake.icap / agent.intake.proxy): arguments, list folder, reload, ISTag."""

import os
import subprocess
import sys

import pytest

from agent.core.errors import ConfigError
from agent.config import parse_listen as parse_hostport
from agent.standalone import FolderLists
from tests.intake.icap.realservers import ROOT, demo_lists, hub


def test_parse_hostport():
    assert parse_hostport("127.0.0.1:1344", 1) == ("127.0.0.1", 1344)
    assert parse_hostport("[::1]:8080", 1) == ("::1", 8080)
    assert parse_hostport("0.0.0.0", 3128) == ("0.0.0.0", 3128)
    for bad in ("host:port", "h:70000", ":80"):
        with pytest.raises(ConfigError, match="HOST:PORT"):
            parse_hostport(bad, 1344)


@pytest.mark.parametrize("module", ["agent.intake.icap", "agent.intake.proxy"])
def test_cli_errors_are_clear(module, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", module] + list(args), capture_output=True, cwd=ROOT,
                              timeout=60)
    res = run("--lists", str(tmp_path / "none"), "--trust", "x.pub")
    assert res.returncode == 2 and b"list folder" in res.stderr and b"does not exist" in res.stderr
    res = run("--lists", str(tmp_path), "--trust", str(tmp_path / "missing.pub"))
    assert res.returncode == 2 and b"cannot read trusted key" in res.stderr
    res = run("--lists", str(tmp_path), "--trust", "x", "--listen", "nonsense:port")
    assert res.returncode == 2 and b"HOST:PORT" in res.stderr


def test_folder_reload_swaps_lists_and_istag_and_keeps_last_good(tmp_path):
    from agent.hashing.samples import encode, generate_image
    lists_dir, pub = demo_lists(str(tmp_path), {"a.jpg": encode(generate_image(4001, (64, 64)), "PNG")})
    folder = FolderLists(lists_dir, [pub])
    first_tag = folder.istag()
    assert len(folder.scanner.lists) == 1 and first_tag.startswith("gw-")
    assert folder.reload() is False  # unchanged folder: nothing to do
    # A newer version of the list arrives: swapped in, ISTag changes.
    hub("lists", "build", "--source", "demo", "--list", "e2e", "--signal", "sha256", "--input",
        str(tmp_path / "listed"), "--key", str(tmp_path / "keys" / "demo.key"), "--out", lists_dir, "--no-progress")
    assert folder.reload() is True and folder.istag() != first_tag
    good_tag = folder.istag()
    good_lists = [(x.ident, x.version) for x in folder.scanner.lists]
    # A forged file: refused, the last good set stays in force.
    newest = sorted(f for f in os.listdir(lists_dir) if f.endswith(".gwl"))[-1]
    data = bytearray(open(os.path.join(lists_dir, newest), "rb").read())
    data[-1] ^= 0xFF
    with open(os.path.join(lists_dir, "forged-v99.gwl"), "wb") as fh:
        fh.write(bytes(data))
    folder.reload()
    assert folder.istag() == good_tag and [(x.ident, x.version) for x in folder.scanner.lists] == good_lists
    assert [r.file for r in folder.refused] == ["forged-v99.gwl"] and "digest" in folder.refused[0].reason
