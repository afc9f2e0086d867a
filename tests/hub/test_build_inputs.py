"""`gatewatch-hub lists build` / `keys generate`: the inputs people actually give, and the mistakes they make.

Every hash here is random or from a generated image (agent.hashing.samples); no real list is used.
"""

from __future__ import annotations

import json
import os
import secrets

import pytest

from agent.core.errors import ConfigError
from agent.hashing import samples
from tools import hub_cli
from tools.sealing import generate_confirm_key
from tools.build import (check_key_source, generate_keys, hash_folder, load_private_key, read_hash_text)


def hub(capsys, *argv):
    """Run gatewatch-hub in process: (exit code, stdout, stderr); argparse errors are exit 2 too."""
    try:
        rc = hub_cli.main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def rand_hex(n_bytes=32):
    return secrets.token_hex(n_bytes)


def tree(path):
    """Every file and folder under path (relative), to show that nothing was written."""
    if not os.path.exists(path):
        return None
    return sorted(os.path.relpath(os.path.join(d, x), path) for d, ds, fs in os.walk(path) for x in ds + fs)


@pytest.fixture
def keys(tmp_path):
    priv, pub = generate_keys(str(tmp_path / "keys"), "demo", "demo")
    return priv, pub


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    for i in range(3):
        (d / ("k%d.png" % i)).write_bytes(samples.encode(samples.generate_image(400 + i, (200, 150)), "PNG"))
    return d


def build_args(keys, inp, out, *extra, source="demo", signal="pdq"):
    return ["lists", "build", "--source", source, "--list", "known", "--signal", signal, "--input", inp,
            "--key", keys[0], "--out", out, "--no-progress"] + list(extra)


# ---------------------------------------------------------------- 1. a key signs for one source

def test_a_key_of_another_source_is_refused_with_what_to_do(capsys, tmp_path, keys, images):
    out = tmp_path / "lists"
    rc, stdout, err = hub(capsys, *build_args(keys, images, out, source="other"))
    assert rc == 2, err
    assert "signs for source 'demo'" in err and "not 'other'" in err
    assert "--source demo" in err and "keys generate" in err and "--source other" in err
    assert tree(out) is None, "nothing is written"


def test_the_matching_source_builds(capsys, tmp_path, keys, images):
    rc, stdout, err = hub(capsys, *build_args(keys, images, tmp_path / "lists"))
    assert rc == 0, err
    assert json.loads(stdout)["entries"] == 3 and "warning" not in err


def test_without_a_pub_beside_the_key_the_source_is_not_checked_and_the_build_goes_on(capsys, tmp_path, keys, images):
    moved = tmp_path / "vault"
    moved.mkdir()
    key = moved / "demo.key"
    os.rename(keys[0], key)
    generate_confirm_key(str(moved), "demo", "other")  # the vault's confirmation key seals for 'other'

    rc, stdout, err = hub(capsys, *build_args((str(key),), images, tmp_path / "lists", source="other"))
    assert rc == 0, err
    assert "cannot check which source" in err and "no demo.pub beside it" in err and "'other'" in err
    assert json.loads(stdout)["device_list"].endswith("other+known.v1.gwl")


def test_a_pub_of_another_key_beside_the_key_is_refused(tmp_path, keys):
    other_priv, other_pub = generate_keys(str(tmp_path / "other"), "demo", "demo")
    os.replace(other_pub, keys[1])  # demo.pub now belongs to another key
    with pytest.raises(ConfigError, match="holds another key"):
        check_key_source(keys[0], load_private_key(keys[0]), "demo")


# ---------------------------------------------------------------- 2. --key given the .pub

def test_a_public_key_as_key_says_so_plainly(capsys, tmp_path, keys, images):
    rc, _, err = hub(capsys, *build_args((keys[1],), images, tmp_path / "lists"))
    assert rc == 2
    assert ("this is a public key; --key takes the private key file (NAME.key) made by keys generate") in err
    assert "did you mean %s" % keys[0] in err
    for jargon in ("PEM", "MalformedFraming", "cryptography.io", "Errno"):
        assert jargon not in err, err
    assert tree(tmp_path / "lists") is None


@pytest.mark.parametrize("content,match", [
    (None, "No such file or directory"),
    ("folder", "is a folder"),
    (b"not a key at all\n", "is not a private key file"),
    (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "is not a readable private key"),
    (b"", "is not a private key file"),
])
def test_unreadable_keys_get_a_message(tmp_path, content, match):
    path = tmp_path / "x.key"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=match) as e:
        load_private_key(str(path))
    assert "Errno" not in str(e.value)


def test_an_unreadable_key_stops_the_build_before_anything_is_written(capsys, tmp_path, keys, images):
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"garbage")
    rc, _, err = hub(capsys, *build_args((str(bad),), images, tmp_path / "lists"))
    assert rc == 2 and "is not a private key file" in err
    assert tree(tmp_path / "lists") is None


# ---------------------------------------------------------------- 3. hash files as tools write them

def test_pdq_space_hex_lines(tmp_path):
    h = [rand_hex() for _ in range(3)]
    f = tmp_path / "hashes.txt"
    f.write_text("pdq %s\nPDQ  %s\npdq\t%s\n" % tuple(h))
    assert [e.hash.hex() for e in read_hash_text(str(f), "pdq")] == h


def test_threatexchange_te_rows(tmp_path):
    # python-threatexchange's CLI state: simple.<INDICATOR_TYPE>.te, CSV rows '<hash>,<descriptor id>,
    # <added_on>,<labels>'; pdq-photo-hasher writes '<hash>,<quality>,<file>' the same way.
    h = [rand_hex() for _ in range(3)]
    f = tmp_path / "simple.HASH_PDQ.te"
    f.write_text("%s,1001,2021-03-04T05:06:07+0000,media_type_photo\n"
                 "%s,1002,2021-03-04T05:06:08+0000,\n"
                 "%s,100,some/file.jpg\n" % tuple(h))
    assert [e.hash.hex() for e in read_hash_text(str(f), "pdq")] == h
    plain = tmp_path / "export.te"
    plain.write_text("%s,3\n" % h[0])
    assert [e.hash.hex() for e in read_hash_text(str(plain), "pdq")] == h[:1]


def test_te_rows_build_through_the_command(capsys, tmp_path, keys):
    f = tmp_path / "simple.HASH_PDQ.te"
    f.write_text("".join("%s,%d,2021-01-01T00:00:00+0000,\n" % (rand_hex(), i) for i in range(5)))
    rc, out, err = hub(capsys, *build_args(keys, f, tmp_path / "lists"))
    assert rc == 0, err
    assert json.loads(out)["entries"] == 5


def test_a_te_file_of_another_signal_only_says_so(tmp_path):
    f = tmp_path / "simple.HASH_MD5.te"
    f.write_text("%s,1,2021-01-01,\n" % rand_hex(16))
    with pytest.raises(ConfigError, match=r"ThreatExchange file of HASH_MD5 \(md5\) hashes, not pdq: build it with "
                                          r"--signal md5"):
        read_hash_text(str(f), "pdq")
    tmk = tmp_path / "simple.HASH_TMK.te"
    tmk.write_text("abc,1\n")
    with pytest.raises(ConfigError, match="HASH_TMK signals, which gatewatch lists cannot hold"):
        read_hash_text(str(tmk), "pdq")


def test_rows_of_another_signal_only_say_which(tmp_path):
    tagged = tmp_path / "md5.txt"
    tagged.write_text("md5,%s\nmd5 %s\n" % (rand_hex(16), rand_hex(16)))
    with pytest.raises(ConfigError, match=r"holds no pdq hashes, only md5 \(2 lines\): build it with --signal md5"):
        read_hash_text(str(tagged), "pdq")
    bare = tmp_path / "sha1.txt"
    bare.write_text("%s\n%s,7\n" % (rand_hex(20), rand_hex(20)))
    with pytest.raises(ConfigError, match=r"holds no sha256 hashes, only sha1 \(2 lines\)"):
        read_hash_text(str(bare), "sha256")
    csvf = tmp_path / "typed.csv"
    csvf.write_text("id,type,hash\na,md5,%s\n" % rand_hex(16))
    with pytest.raises(ConfigError, match=r"only md5 \(1 line\)"):
        read_hash_text(str(csvf), "sha256")


def test_mixed_signal_exports_keep_the_chosen_signal(tmp_path):
    h = rand_hex()
    f = tmp_path / "mixed.txt"
    f.write_text("md5,%s\npdq,%s\nsha1 %s\n" % (rand_hex(16), h, rand_hex(20)))
    assert [e.hash.hex() for e in read_hash_text(str(f), "pdq")] == [h]


@pytest.mark.parametrize("text,line,match", [
    ("# header comment\n\n{h}\nnot a hash\n", 4, "is not a hash line; expected '<hex>', 'pdq <hex>', 'pdq,<hex>', "
                                                 "a ThreatExchange .te row"),
    ("{h}\n{short}\n", 2, "has 32 hex digits, a pdq hash has 64 .that is the length of md5."),
    ("{h}\nabcdef\n", 2, "has 6 hex digits, a pdq hash has 64"),
    ("pdq,zz{h}\n", 1, "is not a pdq hash"),
    ("pdq\n", 1, "names the signal pdq but no hash follows"),
    ("hash,quality\n{h},100\n", 1, "is not a hash line"),
    ("{h}\n\u0661\u0662\u0663\n", 2, "is not a hash line"),  # Arabic-Indic digits are not hex
])
def test_bad_lines_are_named_with_what_was_expected(tmp_path, text, line, match):
    f = tmp_path / "bad.txt"
    f.write_text(text.format(h=rand_hex(), short=rand_hex(16)), encoding="utf-8")
    with pytest.raises(ConfigError, match="line %d: .*%s" % (line, match)):
        read_hash_text(str(f), "pdq")


def test_hash_file_details(tmp_path):
    h = [rand_hex() for _ in range(2)]
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + ("%s\r\n%s\r\n" % tuple(h)).encode())  # Windows editors
    assert [e.hash.hex() for e in read_hash_text(str(bom), "sha256")] == h
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="holds no pdq hashes"):
        read_hash_text(str(empty), "pdq")
    image = tmp_path / "photo.png"
    image.write_bytes(samples.encode(samples.generate_image(1, (64, 64)), "PNG"))
    with pytest.raises(ConfigError, match="is an image .PNG.; --input takes a folder of images"):
        read_hash_text(str(image), "pdq")


def test_the_formats_that_already_worked_still_do(tmp_path):
    h = [rand_hex() for _ in range(3)]
    plain = tmp_path / "plain.txt"
    plain.write_text("# comment\n" + "\n".join(h) + "\n")
    assert [e.hash.hex() for e in read_hash_text(str(plain), "sha256")] == h
    csvf = tmp_path / "list.csv"
    csvf.write_text("id,type,hash\na,sha256,%s\nb,md5,%s\nc,sha256,%s\n" % (h[0], "0" * 32, h[1]))
    assert [(e.id, e.hash.hex()) for e in read_hash_text(str(csvf), "sha256")] == [("a", h[0]), ("c", h[1])]
    te = tmp_path / "te.txt"
    te.write_text("pdq,%s\npdq,%s\n" % (h[0], h[2]))
    assert len(read_hash_text(str(te), "pdq")) == 2
    bad = tmp_path / "bad.txt"
    bad.write_text("nothex\n")
    with pytest.raises(ConfigError, match="line 1"):
        read_hash_text(str(bad), "sha256")


# ---------------------------------------------------------------- 6. everyday mistakes: exit 2, nothing written

@pytest.mark.parametrize("extra,match", [
    (["--capacity", "-5"], "argument --capacity: '-5' is not a whole number"),
    (["--capacity", "0"], "argument --capacity"),
    (["--capacity", "\u0661\u0660"], "argument --capacity: .* .ASCII digits."),
    (["--version", "\u0662"], "argument --version"),
    (["--version", "0"], "argument --version"),
    (["--version", "-1"], "argument --version"),
    (["--fp-rate", "1e300"], "--fp-rate must be a number from 1e-19 to below 0.5"),
    (["--fp-rate", "0.5"], "--fp-rate must be"),
    (["--fp-rate", "1e-30"], "--fp-rate must be"),
    (["--fp-rate", "nan"], "argument --fp-rate: 'nan' is not a plain decimal number"),
    (["--fp-rate", "\u0660.\u0661"], "argument --fp-rate"),
    (["--expires-days", "nan"], "argument --expires-days"),
    (["--expires-days", "inf"], "argument --expires-days"),
    (["--expires-days", "1e300"], "--expires-days must be a number of days above 0 and at most"),
    (["--expires-days", "0"], "--expires-days must be"),
])
def test_bad_numbers_exit_2_before_any_work(capsys, tmp_path, keys, images, extra, match):
    out = tmp_path / "lists"
    rc, stdout, err = hub(capsys, *build_args(keys, images, out, *extra))
    assert rc == 2, err
    assert __import__("re").search(match, err), err
    assert "Traceback" not in err and stdout == ""
    assert tree(out) is None


def test_an_output_folder_that_is_a_file(capsys, tmp_path, keys, images):
    f = tmp_path / "lists"
    f.write_text("I am a file")
    rc, _, err = hub(capsys, *build_args(keys, images, f))
    assert rc == 2 and "--out %s is a file, not a folder" % f in err, err
    rc, _, err = hub(capsys, *build_args(keys, images, f / "sub"))
    assert rc == 2 and "cannot be created" in err, err
    assert f.read_text() == "I am a file"


def test_a_hub_file_in_the_way_leaves_nothing_written(capsys, tmp_path, keys, images):
    out = tmp_path / "lists"
    out.mkdir()
    (out / "hub").write_text("x")
    rc, _, err = hub(capsys, *build_args(keys, images, out))
    assert rc == 2 and "hub is a file" in err, err
    assert tree(out) == ["hub"]


def test_out_inside_input_is_refused(capsys, tmp_path, keys, images):
    rc, _, err = hub(capsys, *build_args(keys, images, images / "lists"))
    assert rc == 2 and "is inside --input" in err
    assert tree(images) == ["k0.png", "k1.png", "k2.png"]


def test_a_folder_without_images_says_why(capsys, tmp_path, keys):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = hub(capsys, *build_args(keys, empty, tmp_path / "lists"))
    assert rc == 2 and "is an empty folder" in err, err
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("hello, these are notes")
    (notes / "page.html").write_text("<html><body>hi</body></html>")
    (notes / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    rc, _, err = hub(capsys, *build_args(keys, notes, tmp_path / "lists"))
    assert rc == 2, err
    assert "holds no images that could be hashed (3 files skipped" in err
    assert "readme.txt: not an image (text/plain?)" in err and ".DS_Store: hidden or system file" in err
    assert tree(tmp_path / "lists") is None


def test_a_missing_input(capsys, tmp_path, keys):
    rc, _, err = hub(capsys, *build_args(keys, tmp_path / "nope", tmp_path / "lists"))
    assert rc == 2 and "--input %s does not exist" % (tmp_path / "nope") in err


def test_special_files_in_the_folder_are_skipped_not_waited_for(tmp_path, images):
    os.mkfifo(str(images / "pipe.jpg"))  # open() would block forever
    entries, skipped = hash_folder(str(images), "sha256")
    assert len(entries) == 3 and skipped == ["pipe.jpg: not a regular file"]


def test_exact_lists_leave_out_hidden_and_system_files(tmp_path, images):
    (images / ".DS_Store").write_bytes(b"junk")
    (images / "Thumbs.db").write_bytes(b"junk")
    os.mkdir(str(images / ".git"))
    (images / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    entries, skipped = hash_folder(str(images), "sha256")
    assert sorted(e.id for e in entries) == ["k0.png", "k1.png", "k2.png"]
    assert len(skipped) == 3


def test_keys_generate_mistakes(capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    rc, out, err = hub(capsys, "keys", "generate", "--out", f, "--source", "s")
    assert rc == 2 and "is a file, not a folder" in err and "Traceback" not in err
    rc, out, err = hub(capsys, "keys", "generate", "--out", tmp_path / "k", "--source", "bad source!")
    assert rc == 2 and "source name 'bad source!' is invalid" in err
    assert not (tmp_path / "k").exists()
    assert hub(capsys, "keys", "generate", "--out", tmp_path / "k", "--source", "s")[0] == 0
    rc, out, err = hub(capsys, "keys", "generate", "--out", tmp_path / "k", "--source", "s")
    assert rc == 2 and "refusing to overwrite" in err


def test_keys_generate_leaves_no_private_key_without_its_public_half(tmp_path, monkeypatch):
    import tools.build as build
    real = build.write_atomic

    def fail_on_pub(path, data, **kw):
        if path.endswith(".pub"):
            raise OSError(28, "No space left on device", path)
        return real(path, data, **kw)

    monkeypatch.setattr(build, "write_atomic", fail_on_pub)
    with pytest.raises(ConfigError, match="No space left on device"):
        generate_keys(str(tmp_path / "k"), "s", "s")
    assert tree(tmp_path / "k") is None


def test_a_failed_write_removes_what_it_wrote(capsys, tmp_path, keys, images, monkeypatch):
    import tools.build as build
    real = build.write_atomic

    def fail_on_gwl(path, data, **kw):
        if path.endswith(".gwl"):
            raise OSError(28, "No space left on device", path)
        return real(path, data, **kw)

    monkeypatch.setattr(build, "write_atomic", fail_on_gwl)
    rc, _, err = hub(capsys, *build_args(keys, images, tmp_path / "lists"))
    assert rc == 2 and "No space left on device" in err
    assert tree(tmp_path / "lists") is None


def test_inspect_mistakes(capsys, tmp_path, keys):
    rc, _, err = hub(capsys, "lists", "inspect", tmp_path)
    assert rc == 2 and "is a folder; lists inspect takes one list file" in err
    rc, _, err = hub(capsys, "lists", "inspect", keys[1])
    assert rc == 2 and "this is a key file" in err
    rc, _, err = hub(capsys, "lists", "inspect", tmp_path / "nope.gwl")
    assert rc == 2 and "No such file or directory" in err and "Errno" not in err
