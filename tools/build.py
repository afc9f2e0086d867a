"""Building lists on the hub: signing keys, entries from images or hash files, signed list files.

Owns: private keys and their files, reading the inputs of `lists build` (a folder of images, or a
text file of hashes), versions and the reuse of a filter's layout across versions (so deltas stay
small), and the two outputs: the device's list file and the hub's private entries file (0600).
Must not touch: the byte layout (``agent.core.listfile``), the Bloom keys (``agent.lists.assemble``),
the network.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import stat
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.atomicfile import write_atomic
from agent.confirm.wire import Entry
from agent.core import listfile
from agent.core.bloom import expected_fp_rate
from agent.core.fuse import FINGERPRINT_BITS as FUSE_FINGERPRINT_BITS, TYPE as FUSE_TYPE
from agent.core.errors import ConfigError, ListFormatError
from agent.core.signals import EXACT_SIGNALS, HEX_LENGTHS, NAME_SIGNALS, PERCEPTUAL_SIGNALS
from agent.lists.assemble import DEFAULT_FP_RATE, DEFAULT_NEURAL_MODEL, assemble, lsh_params
from agent.lists.names import read_names
from agent.lists.store import list_file_name, parse_file_name
from agent.lists.trust import PUB_PREFIX, check_name, key_id, parse_public_key, public_key_line

DEFAULT_EXPIRES_DAYS = 30


# ---------------------------------------------------------------- keys

def generate_keys(out_dir: str, name: str, source: str) -> Tuple[str, str]:
    """Write ``<name>.key`` (PKCS#8 PEM, mode 0600) and ``<name>.pub`` into out_dir; return both paths.

    ``<name>.confirm`` (mode 0600) is written beside them: the source's confirmation key
    (tools.sealing), which `lists build` seals entries with and `serve` answers devices with.

    Nothing is left behind when it fails: an existing key is never overwritten, and a private key whose
    public half could not be written is removed again.
    """
    check_name("source", source)
    check_name("key", name)
    check_out_dir(out_dir, "--out")
    from tools.sealing import CONFIRM_SUFFIX, ConfirmKey

    priv_path = os.path.join(out_dir, name + ".key")
    pub_path = os.path.join(out_dir, name + ".pub")
    confirm_path = os.path.join(out_dir, name + CONFIRM_SUFFIX)
    for p in (priv_path, pub_path, confirm_path):
        if os.path.lexists(p):
            raise ConfigError("%s exists; refusing to overwrite a key (move it away first)" % p)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with _undo_on_error() as created:
        _makedirs(out_dir, created)
        _write(priv_path, pem, created, mode=0o600)
        os.chmod(priv_path, 0o600)
        _write(pub_path, public_key_line(private.public_key(), source).encode(), created)
        _write(confirm_path, json.dumps(ConfirmKey.generate(source).to_json(), indent=1).encode() + b"\n",
               created, mode=0o600)
    return priv_path, pub_path


_NOT_A_PRIVATE_KEY = ("--key takes the private key file (NAME.key) made by keys generate "
                      "(`gatewatch-hub keys generate --out DIR --source SOURCE`)")


def load_private_key(path: str) -> Ed25519PrivateKey:
    """Read a PKCS#8 PEM Ed25519 private key; ConfigError with a message a user can act on."""
    if os.path.isdir(path):
        raise ConfigError("--key %s is a folder; %s" % (path, _NOT_A_PRIVATE_KEY))
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 16)
    except OSError as e:
        raise ConfigError("cannot read private key %s: %s" % (path, e.strerror or e))
    head = data.lstrip()[:64]
    if head.startswith((PUB_PREFIX.encode(), b"-----BEGIN PUBLIC KEY", b"ssh-", b"-----BEGIN OPENSSH PUBLIC")):
        hint = ""
        stem, ext = os.path.splitext(path)
        if ext == ".pub" and os.path.isfile(stem + ".key"):
            hint = " (did you mean %s?)" % (stem + ".key")
        raise ConfigError("%s: this is a public key; %s%s" % (path, _NOT_A_PRIVATE_KEY, hint))
    if not head.startswith(b"-----BEGIN"):
        raise ConfigError("%s is not a private key file; %s" % (path, _NOT_A_PRIVATE_KEY))
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # encrypted PEM: cryptography asks for a password
        raise ConfigError("%s is a password-protected private key; gatewatch needs the unencrypted NAME.key "
                          "that keys generate writes (mode 0600)" % path)
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError("%s is not a readable private key (damaged or not PEM); %s" % (path, _NOT_A_PRIVATE_KEY))
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("%s is a private key of another kind (%s); lists are signed with Ed25519: %s"
                          % (path, type(key).__name__.lstrip("_"), _NOT_A_PRIVATE_KEY))
    return key


def check_key_source(key_path: str, key: Ed25519PrivateKey, source: str) -> Optional[str]:
    """Refuse a key that signs for another source; return a warning when that cannot be checked.

    ``keys generate`` writes NAME.key and NAME.pub side by side, and the .pub names the source the key
    signs for: devices trust it for that source only, so a list of another source signed with it would
    be refused by every device. The check needs that .pub: when there is none beside the key (the
    private key was moved, e.g. to a vault), the source cannot be checked, and the build goes on with
    a warning (the returned text). A .pub beside the key that holds another key is refused: it is not
    this key's public half, and a device given it would refuse the list as well.
    """
    pub_path = os.path.splitext(key_path)[0] + ".pub"
    try:
        with open(pub_path, "r", encoding="utf-8") as f:
            text = f.read(4096)
    except FileNotFoundError:
        return ("warning: cannot check which source %s signs for (no %s beside it); devices accept this "
                "list only if they trust this key for source %r" % (key_path, os.path.basename(pub_path), source))
    except (OSError, UnicodeDecodeError) as e:
        return ("warning: cannot check which source %s signs for (%s unreadable: %s); devices accept this "
                "list only if they trust this key for source %r"
                % (key_path, pub_path, getattr(e, "strerror", None) or "not text", source))
    try:
        public, named = parse_public_key(text, pub_path)
    except ConfigError as e:
        return ("warning: cannot check which source %s signs for (%s); devices accept this list only if "
                "they trust this key for source %r" % (key_path, e, source))
    if key_id(public) != key_id(key.public_key()):
        raise ConfigError("%s beside %s holds another key (key id %s, not %s): it is not this key's public "
                          "half, and devices that trust it would refuse the list; put the matching .pub "
                          "beside the key, or use the .key that belongs to it"
                          % (pub_path, key_path, key_id(public), key_id(key.public_key())))
    if named != source:
        raise ConfigError("key %s signs for source %r (see %s), not %r: devices would refuse the list. "
                          "Use --source %s, or make a key for %r with "
                          "`gatewatch-hub keys generate --out DIR --source %s` and install its .pub on the devices"
                          % (key_path, named, pub_path, source, named, source, source))
    return None



# ---------------------------------------------------------------- options and output folders

# k = log2(1/fp_rate) probes: list files allow up to 64 (agent.core.listfile), so 1e-19 is the floor.
MIN_FP_RATE = 1e-19
MAX_FP_RATE = 0.5
MAX_EXPIRES_DAYS = 36600  # a hundred years: more is a typo, and an expiry that never comes is no expiry
MAX_VERSION = 0xFFFFFFFFFFFF  # agent.core.listfile
MAX_CAPACITY = 1 << 40  # agent.core.listfile


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and x not in (float("inf"), float("-inf"))


def check_build_options(*, fp_rate: float = DEFAULT_FP_RATE, expires_days: float = DEFAULT_EXPIRES_DAYS,
                        capacity: Optional[int] = None, version: Optional[int] = None) -> None:
    """ConfigError unless the numbers of `lists build` are ones a device can use (checked before any work)."""
    if not _finite(fp_rate) or not (MIN_FP_RATE <= fp_rate < MAX_FP_RATE):
        raise ConfigError("--fp-rate must be a number from %g to below %g (e.g. %g), got %r"
                          % (MIN_FP_RATE, MAX_FP_RATE, DEFAULT_FP_RATE, fp_rate))
    if not _finite(expires_days) or not (0 < expires_days <= MAX_EXPIRES_DAYS):
        raise ConfigError("--expires-days must be a number of days above 0 and at most %d, got %r"
                          % (MAX_EXPIRES_DAYS, expires_days))
    if capacity is not None and (type(capacity) is not int or not 1 <= capacity <= MAX_CAPACITY):
        raise ConfigError("--capacity must be a whole number from 1 to %d, got %r" % (MAX_CAPACITY, capacity))
    if version is not None and (type(version) is not int or not 1 <= version <= MAX_VERSION):
        raise ConfigError("--version must be a whole number from 1 to %d, got %r" % (MAX_VERSION, version))


def check_out_dir(path: str, option: str = "--out") -> None:
    """ConfigError unless ``path`` is a folder we can write, or one we can create (nothing is created here)."""
    if not path:
        raise ConfigError("%s needs a folder" % option)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ConfigError("%s %s is a file, not a folder: give a folder (it is created if missing)" % (option, path))
    probe = os.path.abspath(path)
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise ConfigError("%s %s cannot be created: %s is a file, not a folder" % (option, path, probe))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError("%s %s: cannot write in %s (permission denied)" % (option, path, probe))


class _undo_on_error:
    """Collects the files and folders a step creates and removes them again if the step fails.

    OSError leaves as ConfigError with the path and the reason: a full disk or a read-only folder is a
    message and exit 2, and nothing half-written stays behind.
    """

    def __enter__(self) -> List[Tuple[str, str]]:
        self.created: List[Tuple[str, str]] = []
        return self.created

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None:
            return False
        for what, path in reversed(self.created):
            try:
                os.rmdir(path) if what == "dir" else os.unlink(path)
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise ConfigError("cannot write %s: %s" % (exc.filename or "output", exc.strerror or exc)) from None
        return False


def _makedirs(path: str, created: List[Tuple[str, str]]) -> None:
    missing = []
    p = os.path.abspath(path)
    while not os.path.isdir(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    for d in reversed(missing):
        os.mkdir(d)
        created.append(("dir", d))


def _write(path: str, data: bytes, created: List[Tuple[str, str]], mode: Optional[int] = None) -> None:
    if os.path.isdir(path):
        raise ConfigError("cannot write %s: a folder of that name is in the way" % path)
    existed = os.path.lexists(path)
    if mode is None:
        write_atomic(path, data)
    else:
        write_atomic(path, data, mode=mode)
    if not existed:
        created.append(("file", path))



# ---------------------------------------------------------------- entries

# Signal names as other tools write them (ThreatExchange indicator types, upper case) -> ours.
_SIGNAL_ALIASES = {"hash_pdq": "pdq", "pdq": "pdq", "hash_md5": "md5", "md5": "md5",
                   "hash_sha256": "sha256", "sha256": "sha256", "sha-256": "sha256",
                   "hash_sha1": "sha1", "sha1": "sha1", "sha-1": "sha1", "neural": "neural"}
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_FIELDS_RE = re.compile(r"\s*,\s*|\s+")
_LINE_FORMS = ("'<hex>', '%(s)s <hex>', '%(s)s,<hex>', a ThreatExchange .te row '<hex>,<count>,...', "
               "or CSV with a header holding a type column (id,type,hash)")


def _is_hex(text: str) -> bool:
    # str.isascii: fullmatch alone would be enough, but say it: no non-ASCII digit ever becomes a hash
    return bool(text) and text.isascii() and _HEX_RE.fullmatch(text) is not None


def _parse_hex(signal: str, text: str, where: str) -> bytes:
    text = text.strip().lower()
    if len(text) != HEX_LENGTHS[signal] or not _is_hex(text):
        raise ConfigError("%s: %r is not a %s hash (%d hex digits expected)"
                          % (where, text[:80], signal, HEX_LENGTHS[signal]))
    return bytes.fromhex(text)


def _signal_of_hex_length(n: int) -> List[str]:
    # an untagged 32-hex line is guessed to be md5, never a neural code (tag it 'neural,<hex>')
    return [s for s, length in HEX_LENGTHS.items() if length == n and s != "neural" and s not in NAME_SIGNALS]


def _te_file_kind(path: str) -> Optional[str]:
    """The indicator type a python-threatexchange file name states, lower case, or None.

    python-threatexchange writes one file per indicator type, ``simple.HASH_PDQ.te``; a name like
    ``pdq.te`` is read the same way. Other ``.te`` names state nothing.
    """
    base = os.path.basename(path)
    if not base.lower().endswith(".te"):
        return None
    stem = base[:-3]
    kind = stem.split(".")[-1].lower()
    if kind in _SIGNAL_ALIASES or (kind and (stem.lower().startswith("simple.") or kind.startswith("hash_"))):
        return kind
    return None


def read_hash_text(path: str, signal: str) -> List[Entry]:
    """Entries from a text file of hashes for ``signal``.

    Accepted, line by line ('#' comments and blank lines are skipped): a bare hex digest; a signal name
    and the digest separated by a comma or spaces ('pdq,<hex>', 'pdq <hex>'); a ThreatExchange ``.te``
    row as python-threatexchange writes it ('<hex>,<count or id>,...': the first field is the hash, the
    rest is metadata; ``simple.HASH_PDQ.te`` names the signal in the file name); or, when the first
    line is a header with a ``type`` column, CSV (``id,type,hash``). Rows tagged with another signal
    are skipped; a file with no row of ``signal`` says which signals it holds. Anything else is refused
    with the line number and the forms expected.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError("cannot read hash file %s: %s" % (path, e.strerror or e))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        from agent.hashing.imaging import sniff
        if sniff(raw):
            raise ConfigError("--input %s is an image (%s); --input takes a folder of images or a text file of "
                              "hashes: put the image in a folder" % (path, sniff(raw)))
        raise ConfigError("%s is not a text file of hashes (not UTF-8 text)" % path)
    if "\x00" in text:
        raise ConfigError("%s is not a text file of hashes (binary data)" % path)
    if signal in NAME_SIGNALS:
        entries = read_names(text, signal, path)
        if not entries:
            raise ConfigError("%s holds no %s (one a line; '#' starts a comment)"
                              % (path, "URL" if signal == "url" else "domain name"))
        return entries
    te_kind = _te_file_kind(path)
    if te_kind is not None:
        named = _SIGNAL_ALIASES.get(te_kind)
        if named is None:
            raise ConfigError("%s is a ThreatExchange file of %s signals, which gatewatch lists cannot hold "
                              "(they hold %s)" % (path, te_kind.upper(), ", ".join(HEX_LENGTHS)))
        if named != signal:
            raise ConfigError("%s is a ThreatExchange file of %s (%s) hashes, not %s: build it with --signal %s"
                              % (path, te_kind.upper(), named, signal, named))
    numbered = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), start=1)
                if ln.strip() and not ln.lstrip().startswith("#")]
    entries: List[Entry] = []
    others: Dict[str, int] = {}
    wrong_length: List[Tuple[str, str, List[str]]] = []  # untagged hashes of another signal's length
    if numbered and "," in numbered[0][1] and "type" in [c.strip().lower() for c in numbered[0][1].split(",")]:
        entries = _read_typed_csv(path, signal, numbered, others)
    else:
        for n, ln in numbered:
            where = "%s line %d" % (path, n)
            fields = _FIELDS_RE.split(ln)
            tag = _SIGNAL_ALIASES.get(fields[0].lower())
            if tag is not None:
                if len(fields) < 2 or not fields[1]:
                    raise ConfigError("%s: %r names the signal %s but no hash follows" % (where, ln[:80], tag))
                if tag != signal:
                    others[tag] = others.get(tag, 0) + 1
                    continue
                entries.append(Entry("", _parse_hex(signal, fields[1], where)))
            elif _is_hex(fields[0]):
                value = fields[0]
                if len(value) == HEX_LENGTHS[signal]:
                    entries.append(Entry("", _parse_hex(signal, value, where)))
                    continue
                fits = _signal_of_hex_length(len(value))
                if not fits:
                    raise ConfigError("%s: %r has %d hex digits, a %s hash has %d"
                                      % (where, value[:80], len(value), signal, HEX_LENGTHS[signal]))
                wrong_length.append((where, value, fits))
            else:
                raise ConfigError("%s: %r is not a hash line; expected %s"
                                  % (where, ln[:80], _LINE_FORMS % {"s": signal}))
    if wrong_length and entries:
        where, value, fits = wrong_length[0]
        raise ConfigError("%s: %r has %d hex digits, a %s hash has %d (that is the length of %s)"
                          % (where, value[:80], len(value), signal, HEX_LENGTHS[signal], " or ".join(fits)))
    for _where, _value, fits in wrong_length:
        for sig in fits:
            others[sig] = others.get(sig, 0) + 1
    for e in entries:
        if not e.id:
            e.id = "%s:%s" % (signal, e.hash.hex()[:16])
    if not entries:
        if others:
            held = ", ".join("%s (%d line%s)" % (s, c, "" if c == 1 else "s") for s, c in sorted(others.items()))
            guess = sorted(others)[0] if len(others) == 1 else None
            raise ConfigError("%s holds no %s hashes, only %s%s" % (
                path, signal, held, ": build it with --signal %s" % guess if guess else ""))
        raise ConfigError("%s holds no %s hashes (no lines besides comments)" % (path, signal))
    return entries


def _read_typed_csv(path: str, signal: str, numbered: List[Tuple[int, str]], others: Dict[str, int]) -> List[Entry]:
    header = next(csv.reader([numbered[0][1]]))
    cols = {c.strip().lower(): i for i, c in enumerate(header)}
    hcol = next((cols[c] for c in ("hash", "value", "signal_value", "digest", "indicator") if c in cols), None)
    if hcol is None:
        raise ConfigError("%s line %d: CSV has a type column but no hash/value column (header %r)"
                          % (path, numbered[0][0], numbered[0][1][:80]))
    tcol, icol = cols["type"], cols.get("id")
    entries: List[Entry] = []
    for (n, ln), row in zip(numbered[1:], csv.reader([ln for _, ln in numbered[1:]])):
        where = "%s line %d" % (path, n)
        if len(row) <= max(hcol, tcol):
            raise ConfigError("%s: %d fields, the header %r has %d"
                              % (where, len(row), numbered[0][1][:80], len(header)))
        kind = row[tcol].strip().lower()
        tag = _SIGNAL_ALIASES.get(kind, kind)
        if tag != signal:
            others[tag or "(empty type)"] = others.get(tag or "(empty type)", 0) + 1
            continue
        h = _parse_hex(signal, row[hcol], where)
        entries.append(Entry(row[icol].strip() if icol is not None and icol < len(row) else "", h))
    return entries


_JUNK_FILES = frozenset(("thumbs.db", "desktop.ini", ".ds_store"))


def hash_folder(path: str, signal: str, progress: bool = False) -> Tuple[List[Entry], List[str]]:
    """Entries from a folder of images (recursive); returns (entries, skipped file messages).

    Skipped, with a message: files that cannot be read, that are not regular files (a FIFO would block),
    hidden files and folders ('.DS_Store', '.git') and the desktop's own Thumbs.db/desktop.ini, empty
    files, and for PDQ and neural anything that does not decode as an image or is too small. Neural
    codes come from the device's own pipeline (``hash_image(fast=True, neural=...)``), so an entry and
    the same bytes fetched through a gateway give the same code.
    """
    from agent.hashing.imaging import DEFAULT_LIMITS, digests, hash_image
    from agent.core.errors import ImageError

    if signal in NAME_SIGNALS:
        raise ConfigError("--signal %s lists are built from a text file (one %s a line), not a folder: "
                          "--input %s is a folder" % (signal, "URL" if signal == "url" else "domain name", path))
    hasher = None
    if signal == "neural":
        from agent.hashing import neural
        hasher = neural.get_hasher()  # RuntimeMissing / ModelError (ConfigError): exit 2 with the reason

    if not os.path.isdir(path):
        raise ConfigError("--input %s is not a folder" % path)
    files: List[str] = []
    skipped: List[str] = []
    for d, dirs, fs in os.walk(path, onerror=lambda e: skipped.append("%s: cannot read folder: %s" % (
            os.path.relpath(e.filename or path, path), e.strerror or e))):
        hidden = sorted(x for x in dirs if x.startswith("."))
        for x in hidden:
            skipped.append("%s: hidden folder" % os.path.relpath(os.path.join(d, x), path))
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        for f in sorted(fs):
            full = os.path.join(d, f)
            if f.startswith(".") or f.lower() in _JUNK_FILES:
                skipped.append("%s: hidden or system file" % os.path.relpath(full, path))
            else:
                files.append(full)
    if not files and not skipped:
        raise ConfigError("--input %s is an empty folder: put the images to list in it" % path)
    entries: List[Entry] = []
    for fpath in _progress(files, progress, "hashing"):
        rel = os.path.relpath(fpath, path)
        try:
            st = os.stat(fpath)
            if not stat.S_ISREG(st.st_mode):
                skipped.append("%s: not a regular file" % rel)
                continue
            if signal not in EXACT_SIGNALS and st.st_size > DEFAULT_LIMITS.max_bytes:
                skipped.append("%s: file of %d bytes exceeds limit %d" % (rel, st.st_size, DEFAULT_LIMITS.max_bytes))
                continue
            with open(fpath, "rb") as f:
                data = f.read()
        except OSError as e:
            skipped.append("%s: cannot read: %s" % (rel, e.strerror or e))
            continue
        if not data:
            skipped.append("%s: empty file" % rel)
            continue
        if signal in EXACT_SIGNALS:
            h = dict(zip(EXACT_SIGNALS, digests(data)))[signal]
        elif signal == "neural":
            try:
                h = hash_image(data, fast=True, neural=hasher).neural
            except ImageError as e:
                skipped.append("%s: %s" % (rel, e))
                continue
            if h is None:
                skipped.append("%s: too small for a neural code" % rel)
                continue
        else:
            try:
                h = hash_image(data, fast=False).pdq
            except ImageError as e:
                skipped.append("%s: %s" % (rel, e))
                continue
            if h is None:
                skipped.append("%s: too small for a PDQ hash" % rel)
                continue
        entries.append(Entry(rel, h))
    if not entries:
        shown = "; ".join(skipped[:5]) + ("; and %d more" % (len(skipped) - 5) if len(skipped) > 5 else "")
        raise ConfigError("--input %s holds no %s that could be hashed (%d file%s skipped: %s)"
                          % (path, "images" if signal not in EXACT_SIGNALS else "files", len(skipped),
                             "" if len(skipped) == 1 else "s", shown or "none"))
    return entries, skipped


def _progress(items, enabled: bool, desc: str):
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # progress is optional
        return items
    return tqdm(items, desc=desc, unit="file", file=sys.stderr)



# ---------------------------------------------------------------- building

def check_list_name(name: str) -> str:
    """A block list's name: the safe alphabet, and not the name every source's allow list has."""
    from agent.core.allowlist import LIST_NAME

    check_name("list", name)
    if name == LIST_NAME:
        raise ConfigError("list name %r is reserved for the source's allow list: build that with "
                          "`gatewatch-hub allow build`, and give this list another name" % name)
    return name


def newest_built(out_dir: str, source: str, name: str) -> Optional[listfile.ListFile]:
    """The newest list file already built for source/name in out_dir (unverified: it is our own)."""
    versions = []
    for path in glob.glob(os.path.join(glob.escape(out_dir), "*.gwl")):
        parsed = parse_file_name(os.path.basename(path))
        if parsed is not None and parsed[:2] == (source, name):
            versions.append((parsed[2], path))
    if not versions:
        return None
    path = max(versions)[1]
    try:
        with open(path, "rb") as f:
            return listfile.parse(f.read())
    except OSError as e:
        raise ConfigError("cannot read the previous version %s: %s" % (path, e.strerror or e))
    except ListFormatError as e:
        raise ConfigError("the previous version %s is damaged (%s): move it away, or build into another --out"
                          % (path, e))


def next_version(out_dir: str, source: str, name: str, version: Optional[int] = None):
    """(the version to build, the newest already built or None): ``version`` if given and newer than
    what ``out_dir`` holds, else the newest + 1 (or 1); ConfigError for a version that is not newer."""
    prev = newest_built(out_dir, source, name) if os.path.isdir(out_dir) else None
    if version is None:
        version = prev.manifest["version"] + 1 if prev else 1
    elif prev is not None and version <= prev.manifest["version"]:
        raise ConfigError("version %d is not newer than v%d already built in %s"
                          % (version, prev.manifest["version"], out_dir))
    check_build_options(version=version)
    return version, prev


def build_list(*, source: str, name: str, signal: str, entries: Sequence[Entry], key: Ed25519PrivateKey,
               out_dir: str, fp_rate: float = DEFAULT_FP_RATE, version: Optional[int] = None,
               expires_days: float = DEFAULT_EXPIRES_DAYS, capacity: Optional[int] = None,
               lsh: Optional[dict] = None, now: Optional[float] = None,
               confirm_key=None, filter_type: str = "bloom") -> Tuple[str, str, dict]:
    """Build, sign and write a list; return (device file, hub entries file, manifest).

    With ``confirm_key`` (tools.sealing.ConfirmKey of the source) every entry is also sealed for
    private confirmation: hub/<file>.sealed and the source's key for the confirmation service are
    written, and the manifest signs the commitment to the sealed buckets. Without it the list offers
    no confirmation (devices still block its exact hits locally and report nothing).

    A new version reuses the filter parameters (m, k, salt) of the newest version in out_dir when the
    entries fit its capacity, so that a delta between the two is just the bits that changed.
    ``filter_type`` "fuse16" holds the list in a binary fuse filter (agent.core.fuse) instead: about
    as small as the default Bloom filter of a PDQ list with far fewer false positives per probe, but
    rebuilt whole for every version (its deltas are as large as the list). Every
    check runs before anything is written; if writing fails, what was written is removed again.
    """
    check_name("source", source)
    check_list_name(name)
    if signal not in EXACT_SIGNALS + PERCEPTUAL_SIGNALS:
        raise ConfigError("signal %r is not supported; use one of %s"
                          % (signal, ", ".join(EXACT_SIGNALS + PERCEPTUAL_SIGNALS)))
    check_build_options(fp_rate=fp_rate, expires_days=expires_days, capacity=capacity, version=version)
    check_out_dir(out_dir)
    now = int(time.time() if now is None else now)
    # Deduplicate by hash: one Bloom key set per distinct entry.
    seen: Dict[bytes, Entry] = {}
    for e in entries:
        seen.setdefault(e.hash, e)
    unique = list(seen.values())
    n = len(unique)
    model = None
    if signal == "neural":
        model = DEFAULT_NEURAL_MODEL  # the only model that ships; images are hashed with it
    params = lsh_params(signal, lsh, model)

    version, prev = next_version(out_dir, source, name, version)
    pf = prev.manifest["filter"] if prev else None
    reuse = None
    if (pf and filter_type == "bloom" and pf["type"] == "bloom" and prev.manifest["signal"] == signal
            and pf.get("capacity", 0) >= n
            and pf.get("fp_rate") == fp_rate and prev.manifest.get("lsh") == params):
        reuse = (pf["m"], pf["k"], bytes.fromhex(pf["salt"]), pf["capacity"])
    table = sealed_section = None
    if confirm_key is not None:
        from tools import sealing

        if confirm_key.source != source:
            raise ConfigError("the confirmation key is for source %r, not %r" % (confirm_key.source, source))
        table = sealing.seal_entries(confirm_key, name, signal, unique, params, version)
        sealed_section = sealing.commitment(table, confirm_key)
    try:
        data = assemble(source=source, name=name, signal=signal, version=version, hashes=[e.hash for e in unique],
                        sign=key.sign, key_id=key_id(key.public_key()), created=now,
                        expires=int(now + expires_days * 86400), fp_rate=fp_rate, lsh=params, capacity=capacity,
                        params=reuse, model=model, sealed=sealed_section, filter_type=filter_type)
        manifest = listfile.parse(data).manifest
    except ListFormatError as e:  # e.g. a filter over 2**32 bits: nothing is written
        raise ConfigError("cannot build %s/%s: %s" % (source, name, e))
    base = list_file_name(source, name, version)[:-len(".gwl")]
    device_path = os.path.join(out_dir, base + ".gwl")
    hub_dir = os.path.join(out_dir, "hub")
    if os.path.lexists(hub_dir) and not os.path.isdir(hub_dir):
        raise ConfigError("%s is a file; the hub's entries go into that folder: move the file away" % hub_dir)
    hub_path = os.path.join(hub_dir, base + ".entries.json")
    hub_doc = {"source": source, "list": name, "signal": signal, "version": int(version),
               "lsh": params, "entries": [e.to_json() for e in unique]}
    if model is not None:
        hub_doc["model"] = model
    with _undo_on_error() as created:
        _makedirs(hub_dir, created)
        _write(hub_path, json.dumps(hub_doc, separators=(",", ":")).encode(), created, mode=0o600)
        if table is not None:
            from tools import sealing

            _write(os.path.join(hub_dir, base + ".sealed"), table.to_bytes(), created, mode=0o600)
            key_path = os.path.join(hub_dir, sealing.service_key_name(confirm_key))
            if not os.path.exists(key_path):
                _write(key_path, json.dumps(confirm_key.to_json()).encode(), created, mode=0o600)
        _write(device_path, data, created)
    return device_path, hub_path, manifest


def filter_stats(loaded_or_file) -> dict:
    """Statistics of a list's filter: fill, design and expected false-positive rates, bits per entry."""
    lf = getattr(loaded_or_file, "file", loaded_or_file)
    f = lf.manifest["filter"]
    if f["type"] == FUSE_TYPE:
        return {"type": f["type"], "bytes": lf.manifest["content_length"], "entries": f["entries"],
                "keys": f.get("keys"), "fingerprint_bits": FUSE_FINGERPRINT_BITS,
                "expected_fp_rate": 2.0 ** -FUSE_FINGERPRINT_BITS,
                "bits_per_entry": round(8 * lf.manifest["content_length"] / max(f["entries"], 1), 3)}
    ones = int(np.unpackbits(np.frombuffer(lf.content, dtype=np.uint8)).sum())
    n_keys = f["entries"] * f.get("keys_per_entry", 1)
    return {"type": f["type"], "bits": f["m"], "bytes": lf.manifest["content_length"], "probes": f["k"],
            "entries": f["entries"], "capacity": f.get("capacity"), "design_fp_rate": f.get("fp_rate"),
            "fill": round(ones / f["m"], 6),
            "expected_fp_rate": expected_fp_rate(f["m"], f["k"], n_keys) if n_keys else 0.0,
            "bits_per_entry": round(f["m"] / max(f["entries"], 1), 3)}
