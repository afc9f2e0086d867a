"""The two command lines end to end: keys, lists build/inspect, hash, scan, exit codes and bad input."""

import json
import os
import struct
import subprocess
import sys
import time
import zlib

import pytest

from agent.hashing import samples
from tests import paths

ROOT = str(paths.ROOT)


def run(*argv, tool="agent.cli", timeout=120):
    p = subprocess.run([sys.executable, "-m", tool] + [str(a) for a in argv], capture_output=True,
                       text=True, timeout=timeout, cwd=ROOT)
    return p.returncode, p.stdout, p.stderr


def hub(*argv):
    return run(*argv, tool="tools.hub_cli")


def lines(out):
    return [json.loads(x) for x in out.splitlines() if x.strip()]


def png_header(width, height):
    """A tiny PNG that claims width x height: a decompression bomb's header, nothing behind it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
            + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND") & 0xFFFFFFFF))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    known = d / "known"
    known.mkdir()
    imgs = {}
    for i in range(4):
        img = samples.generate_image(300 + i)
        imgs[i] = img
        (known / ("k%d.jpg" % i)).write_bytes(samples.encode(img, "JPEG"))
    rc, out, err = hub("keys", "generate", "--out", d / "keys", "--source", "hotline")
    assert rc == 0, err
    for signal, name in (("pdq", "perceptual"), ("sha256", "exact")):
        rc, out, err = hub("lists", "build", "--source", "hotline", "--list", name, "--signal", signal,
                           "--input", known, "--key", d / "keys" / "hotline.key", "--out", d / "lists")
        assert rc == 0, err
        assert json.loads(out)["entries"] == 4
    q = d / "query"
    q.mkdir()
    (q / "a_exact.jpg").write_bytes((known / "k0.jpg").read_bytes())
    (q / "b_half.png").write_bytes(samples.encode(samples.transform(imgs[1], "half"), "PNG"))
    (q / "c_flip.jpg").write_bytes(samples.encode(samples.transform(imgs[2], "flip"), "JPEG"))
    for i in range(3):
        (q / ("d_unrelated%d.jpg" % i)).write_bytes(samples.encode(samples.generate_image(900 + i), "JPEG"))
    frames = [samples.generate_image(300, size=(64, 48)), samples.generate_image(301, size=(64, 48))]
    import io
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    (q / "e_animated.gif").write_bytes(buf.getvalue())
    bad = d / "bad"
    bad.mkdir()
    full = samples.encode(imgs[3], "JPEG")
    (bad / "zero.jpg").write_bytes(b"")
    (bad / "truncated.jpg").write_bytes(full[: len(full) // 3])
    (bad / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2000))
    (bad / "page.html").write_bytes(b"<!doctype html><html><body>not an image</body></html>")
    (bad / "bomb.png").write_bytes(png_header(40000, 40000))
    (bad / "absurd.png").write_bytes(png_header(1, 2**31 - 1))
    (bad / "ok.jpg").write_bytes(samples.encode(samples.generate_image(77), "JPEG"))
    return d


def test_hash_prints_digests_and_pdq(built):
    rc, out, err = run("hash", built / "known" / "k0.jpg")
    assert rc == 0, err
    (row,) = lines(out)
    assert set(row) >= {"path", "bytes", "sha256", "sha1", "md5", "pdq", "pdq_quality"}
    assert len(row["pdq"]) == 64 and len(row["sha256"]) == 64 and len(row["md5"]) == 32


def test_scan_verdicts_and_exit_code(built):
    rc, out, err = run("scan", "--lists", built / "lists", "--trust", built / "keys" / "hotline.pub",
                       "--confirm-with", built / "lists", built / "query")
    assert rc == 1, err
    rows = {os.path.basename(r["path"]): r for r in lines(out)}
    assert rows["a_exact.jpg"]["verdict"] == "match" and rows["a_exact.jpg"]["signal"] == "sha256"
    assert rows["b_half.png"]["verdict"] == "match" and rows["b_half.png"]["signal"] == "pdq"
    assert rows["b_half.png"]["distance"] <= 31
    assert rows["c_flip.jpg"]["verdict"] == "match"
    for i in range(3):
        assert rows["d_unrelated%d.jpg" % i]["verdict"] == "clean"
    assert rows["e_animated.gif"]["verdict"] == "clean", "an animated GIF is no error"
    for r in rows.values():
        assert "pdq" not in r, "scan output never carries a perceptual hash"


def test_scan_without_confirmation_reports_candidates(built):
    rc, out, _ = run("scan", "--lists", built / "lists", "--trust", built / "keys" / "hotline.pub",
                     built / "query" / "b_half.png")
    assert rc == 1
    assert lines(out)[0]["verdict"] == "candidate"


def test_clean_scan_exits_zero(built):
    # confirmed against the hub entries, so that a Bloom candidate (design rate) cannot flake it
    rc, out, _ = run("scan", "--lists", built / "lists", "--trust", built / "keys" / "hotline.pub",
                     "--confirm-with", built / "lists", built / "query" / "d_unrelated0.jpg")
    assert rc == 0 and lines(out)[0]["verdict"] == "clean"


def test_bad_input_gets_error_and_the_scan_goes_on(built):
    start = time.monotonic()
    rc, out, err = run("scan", "--lists", built / "lists", "--trust", built / "keys" / "hotline.pub",
                       built / "bad", built / "bad" / "missing.jpg")
    assert time.monotonic() - start < 60
    assert rc == 2 and "no such file or folder" in err and "missing.jpg" in err, err  # named but absent
    rows = {os.path.basename(r["path"]): r for r in lines(out)}
    assert rows["ok.jpg"]["verdict"] == "clean"
    for name in ("zero.jpg", "truncated.jpg", "corrupt.png", "page.html", "bomb.png", "absurd.png",
                 "missing.jpg"):
        assert rows[name]["verdict"] == "error", name
        assert rows[name]["reason"], name
    assert "40000" in rows["bomb.png"]["reason"]
    rc, out, err = run("scan", "--lists", built / "lists", "--trust", built / "keys" / "hotline.pub", built / "bad")
    assert rc == 0, err  # unreadable images are verdicts, not usage errors


@pytest.mark.parametrize("damage", ["flip", "other-key", "expired", "oversize"])
def test_bad_list_stops_the_scan_with_exit_2(built, tmp_path, damage):
    lists = tmp_path / "lists"
    lists.mkdir()
    src = built / "lists" / "hotline+exact.v1.gwl"
    data = bytearray(src.read_bytes())
    trust = built / "keys" / "hotline.pub"
    if damage == "flip":
        data[-1] ^= 0xFF  # in the content: only the signed digest can tell
        (lists / src.name).write_bytes(bytes(data))
    elif damage == "other-key":
        assert hub("keys", "generate", "--out", tmp_path / "k", "--source", "hotline")[0] == 0
        assert hub("lists", "build", "--source", "hotline", "--list", "exact", "--signal", "sha256",
                   "--input", built / "known", "--key", tmp_path / "k" / "hotline.key", "--out", lists)[0] == 0
    elif damage == "expired":
        assert hub("lists", "build", "--source", "hotline", "--list", "exact", "--signal", "sha256",
                   "--input", built / "known", "--key", built / "keys" / "hotline.key", "--out", lists,
                   "--expires-days", "0.00001")[0] == 0
        time.sleep(1.5)
    elif damage == "oversize":
        assert hub("lists", "build", "--source", "hotline", "--list", "exact", "--signal", "sha256",
                   "--input", built / "known", "--key", built / "keys" / "hotline.key", "--out", lists,
                   "--capacity", "100000", "--fp-rate", "1e-6")[0] == 0
    cap = ["--max-list-bytes", "100000"] if damage == "oversize" else []
    rc, out, err = run("scan", "--lists", lists, "--trust", trust, *cap, built / "query")
    assert rc == 2
    assert out == "", "no file is scanned without its list"
    assert "error:" in err
    expected = {"flip": "does not match the signed digest", "other-key": "signature does not verify", "expired": "expired",
                "oversize": "size cap"}[damage]
    assert expected in err, err


def test_usage_errors_exit_2(built):
    assert run("scan", built / "query")[0] == 2
    rc, _, err = run("scan", "--lists", built / "nope", "--trust", built / "keys" / "hotline.pub", built)
    assert rc == 2 and "does not exist" in err
    rc, _, err = hub("lists", "build", "--source", "bad name!", "--list", "x", "--signal", "sha256", "--input",
                     built / "known", "--key", built / "keys" / "hotline.key", "--out", built / "x")
    assert rc == 2 and "invalid" in err


def test_inspect_prints_manifest_and_stats(built):
    rc, out, err = hub("lists", "inspect", built / "lists" / "hotline+perceptual.v1.gwl")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["manifest"]["signal"] == "pdq" and doc["manifest"]["lsh"]["bands"] >= 1
    assert 0 < doc["stats"]["fill"] < 1


def test_build_from_hash_file(built, tmp_path):
    rows = lines(run("hash", built / "known")[1])
    (tmp_path / "hashes.csv").write_text("id,type,hash\n" + "".join(
        "%s,pdq,%s\n" % (os.path.basename(r["path"]), r["pdq"]) for r in rows))
    rc, out, err = hub("lists", "build", "--source", "hotline", "--list", "fromcsv", "--signal", "pdq", "--input",
                       tmp_path / "hashes.csv", "--key", built / "keys" / "hotline.key", "--out", tmp_path / "l")
    assert rc == 0, err
    assert json.loads(out)["entries"] == 4


def test_build_refuses_a_key_of_another_source(built, tmp_path):
    rc, out, err = hub("lists", "build", "--source", "other", "--list", "x", "--signal", "sha256", "--input",
                       built / "known", "--key", built / "keys" / "hotline.key", "--out", tmp_path / "l")
    assert rc == 2 and "signs for source 'hotline'" in err and "--source hotline" in err, err
    assert not (tmp_path / "l").exists()


def test_build_with_the_public_key_says_so(built, tmp_path):
    rc, out, err = hub("lists", "build", "--source", "hotline", "--list", "x", "--signal", "sha256", "--input",
                       built / "known", "--key", built / "keys" / "hotline.pub", "--out", tmp_path / "l")
    assert rc == 2 and "this is a public key; --key takes the private key file (NAME.key)" in err, err
    assert "Traceback" not in err and "PEM" not in err


def test_build_from_pdq_space_lines_written_by_hash(built, tmp_path):
    rows = lines(run("hash", built / "known")[1])
    (tmp_path / "hashes.txt").write_text("".join("pdq %s\n" % r["pdq"] for r in rows))
    rc, out, err = hub("lists", "build", "--source", "hotline", "--list", "spaced", "--signal", "pdq", "--input",
                       tmp_path / "hashes.txt", "--key", built / "keys" / "hotline.key", "--out", tmp_path / "l")
    assert rc == 0, err
    assert json.loads(out)["entries"] == 4


def test_hash_missing_path_and_empty_folder_exit_2(built, tmp_path):
    (tmp_path / "empty").mkdir()
    rc, out, err = run("hash", built / "known" / "k0.jpg", tmp_path / "missing.jpg", tmp_path / "empty")
    assert rc == 2, err
    assert "no such file or folder: %s" % (tmp_path / "missing.jpg") in err
    assert "folder %s holds no files" % (tmp_path / "empty") in err
    assert [os.path.basename(r["path"]) for r in lines(out)] == ["k0.jpg"], "the files that exist are hashed"


def test_16_bit_greyscale_png_matches_its_8_bit_original(built, tmp_path):
    from PIL import Image
    import numpy as np
    img = samples.generate_image(300)
    grey = np.asarray(img.convert("L")).astype(np.uint16) * 257
    Image.fromarray(grey).save(tmp_path / "deep.png")  # Pillow writes I;16 as a 16-bit PNG
    (tmp_path / "grey8.png").write_bytes(samples.encode(img.convert("L"), "PNG"))
    rows = {os.path.basename(r["path"]): r for r in lines(run("hash", "--full", tmp_path)[1])}
    from agent.hashing import pdq
    assert pdq.hamming(bytes.fromhex(rows["deep.png"]["pdq"]), bytes.fromhex(rows["grey8.png"]["pdq"])) <= 4


def test_scan_applies_the_sources_allow_list(built, tmp_path):
    import hashlib
    lists = tmp_path / "lists"
    lists.mkdir()
    for name in os.listdir(built / "lists"):
        if name.endswith(".gwl"):
            (lists / name).write_bytes((built / "lists" / name).read_bytes())
    exact = (built / "query" / "a_exact.jpg").read_bytes()
    allow = tmp_path / "rejected.txt"
    allow.write_text("sha256,%s\nentry,hotline/perceptual,k0.jpg\n" % hashlib.sha256(exact).hexdigest())
    rc, out, err = hub("allow", "build", "--source", "hotline", "--key", built / "keys" / "hotline.key",
                       "--input", allow, "--out", lists)
    assert rc == 0, err
    rc, out, err = run("scan", "--lists", lists, "--trust", built / "keys" / "hotline.pub",
                       "--confirm-with", built / "lists", built / "query" / "a_exact.jpg", built / "query" / "c_flip.jpg")
    rows = {os.path.basename(r["path"]): r for r in lines(out)}
    # a_exact hits the exact list (digest allowed) and the PDQ list (entry k0.jpg allowed): allowed
    assert rows["a_exact.jpg"] == {"path": str(built / "query" / "a_exact.jpg"), "verdict": "allowed",
                                   "allowed_by": ["hotline/allow"]}, rows
    assert rows["c_flip.jpg"]["verdict"] == "match" and rc == 1


def test_build_a_fuse_list_with_two_agreeing_bands(built, tmp_path):
    out = tmp_path / "fuse"
    rc, o, err = hub("lists", "build", "--source", "hotline", "--list", "fused", "--signal", "pdq", "--input",
                     built / "known", "--key", built / "keys" / "hotline.key", "--out", out, "--filter", "fuse16",
                     "--min-bands", "2")
    assert rc == 0, err
    rc, o, err = hub("lists", "inspect", out / "hotline+fused.v1.gwl")
    doc = json.loads(o)
    assert doc["manifest"]["filter"]["type"] == "fuse16" and doc["manifest"]["lsh"]["min_bands"] == 2
    assert doc["stats"]["type"] == "fuse16" and doc["stats"]["expected_fp_rate"] == 2.0 ** -16
    rc, o, err = run("scan", "--lists", out, "--trust", built / "keys" / "hotline.pub", "--confirm-with", out,
                     built / "query" / "a_exact.jpg", built / "query" / "c_flip.jpg", built / "query" / "d_unrelated0.jpg")
    rows = {os.path.basename(r["path"]): r["verdict"] for r in lines(o)}
    assert rows == {"a_exact.jpg": "match", "c_flip.jpg": "match", "d_unrelated0.jpg": "clean"}, err


@pytest.mark.parametrize("extra,words", [
    (["--signal", "sha256", "--min-bands", "2"], "--min-bands is for perceptual lists"),
    (["--signal", "pdq", "--min-bands", "8"], "min_bands 8 exceeds the list's 7 bands"),
    (["--signal", "pdq", "--min-bands", "٢"], "ASCII digits"),
    (["--signal", "pdq", "--filter", "cuckoo"], "invalid choice"),
])
def test_build_refuses_bad_filter_options(built, tmp_path, extra, words):
    rc, o, err = hub("lists", "build", "--source", "hotline", "--list", "x", "--input", built / "known",
                     "--key", built / "keys" / "hotline.key", "--out", tmp_path / "l", *extra)
    assert rc == 2 and words in err, err
    assert not (tmp_path / "l").exists()
