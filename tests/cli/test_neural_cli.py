"""`--signal neural` end to end through both command lines: build from benign photos, inspect, hash, and
`gatewatch scan --confirm-with` confirming a 10%-cropped copy that PDQ alone misses."""

import io
import json

import pytest
from PIL import Image

from agent.hashing import neural
from tests.cli.test_cli import hub, lines, run

LISTED = ("astronaut", "chelsea", "rocket")


def jpeg(img):
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data = pytest.importorskip("skimage.data", reason="scikit-image (test extra) ships the photos")
    d = tmp_path_factory.mktemp("neural-cli")
    known, query = d / "known", d / "query"
    known.mkdir()
    query.mkdir()
    for n in LISTED:
        (known / (n + ".jpg")).write_bytes(jpeg(Image.fromarray(getattr(data, n)())))
    chelsea = Image.fromarray(data.chelsea())
    w, h = chelsea.size
    dx, dy = int(w * 0.05), int(h * 0.05)
    (query / "chelsea-crop10.jpg").write_bytes(jpeg(chelsea.crop((dx, dy, w - dx, h - dy))))
    (query / "camera.jpg").write_bytes(jpeg(Image.fromarray(data.camera())))
    rc, out, err = hub("keys", "generate", "--out", d / "keys", "--source", "hotline")
    assert rc == 0, err
    for signal in ("neural", "pdq"):
        rc, out, err = hub("lists", "build", "--source", "hotline", "--list", "known-" + signal, "--signal", signal,
                           "--input", known, "--key", d / "keys" / "hotline.key", "--out", d / signal)
        assert rc == 0, err
        assert json.loads(out)["entries"] == 3
    return d


def scan(d, lists):
    rc, out, err = run("scan", "--lists", d / lists, "--trust", d / "keys" / "hotline.pub",
                       "--confirm-with", d / lists, d / "query")
    return rc, {r["path"].rsplit("/", 1)[-1]: r for r in lines(out)}, err


def test_neural_confirms_a_cropped_photo_that_pdq_misses(built):
    rc, rows, err = scan(built, "neural")
    assert rc == 1, err
    assert rows["chelsea-crop10.jpg"]["verdict"] == "match"
    assert rows["chelsea-crop10.jpg"]["signal"] == "neural"
    assert rows["chelsea-crop10.jpg"]["entry"] == "chelsea.jpg"
    assert rows["chelsea-crop10.jpg"]["distance"] <= neural.load_manifest()["threshold"]
    assert rows["camera.jpg"]["verdict"] == "clean"
    rc, rows, err = scan(built, "pdq")
    assert rc == 0, err
    assert rows["chelsea-crop10.jpg"]["verdict"] == "clean"


def test_inspect_shows_the_neural_manifest(built):
    (path,) = (built / "neural").glob("*.gwl")
    rc, out, err = hub("lists", "inspect", path)
    assert rc == 0, err
    m = json.loads(out)["manifest"]
    assert m["signal"] == "neural" and m["model"] == neural.DEFAULT_MODEL
    assert m["lsh"] == {"bands": 4, "depth": 2, "flip_bits": 8, "key_bits": 16, "min_quality": 20,
                        "threshold": neural.load_manifest()["threshold"]}


def test_hash_prints_the_neural_code_and_a_text_list_of_codes_builds(built, tmp_path):
    rc, out, err = run("hash", built / "query" / "camera.jpg", built / "known" / "chelsea.jpg")
    assert rc == 0, err
    rows = lines(out)
    assert all(len(r["neural"]) == 32 for r in rows)
    # text input: bare 32-hex codes and 'neural,<hex>' lines, as `hash` prints them
    (tmp_path / "codes.txt").write_text("%s\nneural,%s\n" % (rows[0]["neural"], rows[1]["neural"]))
    rc, out, err = hub("lists", "build", "--source", "hotline", "--list", "codes", "--signal", "neural",
                       "--input", tmp_path / "codes.txt", "--key", built / "keys" / "hotline.key",
                       "--out", tmp_path / "out")
    assert rc == 0, err
    assert json.loads(out)["entries"] == 2
    (tmp_path / "bad.txt").write_text("neural,%s\n" % rows[0]["sha256"])
    rc, out, err = hub("lists", "build", "--source", "hotline", "--list", "codes", "--signal", "neural",
                       "--input", tmp_path / "bad.txt", "--key", built / "keys" / "hotline.key",
                       "--out", tmp_path / "out")
    assert rc == 2 and "not a neural hash (32 hex digits expected)" in err
