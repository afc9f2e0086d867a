"""Building allow lists on the hub: false positives an analyst rejected, as a signed list devices load.

Owns reading the allow input (one entry a line), the next version of a source's allow list, and
writing the signed file (``<source>+allow.v<N>.gwl``) that `gatewatch-hub publish` sends like every
list. Must not touch: the byte layout and its limits (``agent.core.allowlist``, ``agent.core.listfile``),
keys on disk (``tools.build``), the network.

Input, one entry a line ('#' comments and blank lines are skipped)::

    sha256,<64 hex>          the image with that digest (also sha1, md5)
    pdq,<64 hex>[,<radius>]  images whose PDQ hash lies within radius bits (default 8, at most 15)
    neural,<32 hex>[,<r>]    images whose neural code lies within r bits (default 4, at most 14)
    entry,<source>/<list>,<entry id>   hits on that entry of that list (the id as the hub names it)

A line that is anything else is refused with its number, and nothing is written.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from typing import List, Optional, Tuple

from agent.core import allowlist, listfile
from agent.core.allowlist import AllowEntry
from agent.core.errors import ConfigError, ListFormatError
from agent.core.signals import HEX_LENGTHS
from agent.lists.assemble import DEFAULT_NEURAL_MODEL
from agent.lists.store import list_file_name
from agent.lists.trust import check_name, key_id
from tools.build import (DEFAULT_EXPIRES_DAYS, _makedirs, _undo_on_error, _write, check_build_options,
                         check_key_source, check_out_dir, load_private_key, next_version)

# the network neural entries come from: the one `lists build --signal neural` names (a device compares
# an allow list's model with the one its neural codes come from, so a stale name disables its entries)
DEFAULT_MODEL = DEFAULT_NEURAL_MODEL
_HEX_RE = re.compile(r"[0-9a-f]+")
_DIGITS_RE = re.compile(r"[0-9]{1,3}")
MAX_INPUT_BYTES = 16 * 1024 * 1024
FORMS = ("'sha256,<hex>' (or sha1, md5), 'pdq,<hex>[,<radius>]', 'neural,<hex>[,<radius>]' or "
         "'entry,<source>/<list>,<entry id>'")


def _hash_line(kind: str, fields: List[str], where: str) -> AllowEntry:
    if len(fields) < 2 or not fields[1].strip():
        raise ConfigError("%s: %s names no hash; expected %s" % (where, kind, FORMS))
    text = fields[1].strip().lower()
    # isascii first: a fullmatch on [0-9a-f] already refuses other scripts' digits, but say it
    if len(text) != HEX_LENGTHS[kind] or not text.isascii() or not _HEX_RE.fullmatch(text):
        raise ConfigError("%s: %r is not a %s hash (%d hex digits expected)" % (where, text[:80], kind, HEX_LENGTHS[kind]))
    radius = 0
    if kind in allowlist.PERCEPTUAL:
        radius = allowlist.DEFAULT_RADIUS[kind]
        if len(fields) > 3:
            raise ConfigError("%s: too many fields; expected %s" % (where, FORMS))
        if len(fields) == 3:
            r = fields[2].strip()
            hi = allowlist.MAX_RADIUS[kind]
            if not (r.isascii() and _DIGITS_RE.fullmatch(r)) or int(r) > hi:
                raise ConfigError("%s: radius %r must be a whole number from 0 to %d (ASCII digits): an allow "
                                  "entry opens only a small ball around a false positive" % (where, r[:20], hi))
            radius = int(r)
    elif len(fields) > 2:
        raise ConfigError("%s: a %s digest allows by equality and takes no radius" % (where, kind))
    return AllowEntry(kind, hash=bytes.fromhex(text), radius=radius)


def _entry_line(line: str, where: str) -> AllowEntry:
    parts = line.split(",", 2)
    if len(parts) != 3 or not parts[2].strip():
        raise ConfigError("%s: expected 'entry,<source>/<list>,<entry id>'" % where)
    ident, entry = parts[1].strip(), parts[2].strip()
    if ident.count("/") != 1:
        raise ConfigError("%s: %r is not '<source>/<list>'" % (where, ident[:80]))
    source, name = ident.split("/")
    try:
        check_name("source", source)
        check_name("list", name)
    except ConfigError as exc:
        raise ConfigError("%s: %s" % (where, exc)) from None
    e = AllowEntry("entry", list=ident, entry=entry)
    try:
        return e.check(where)
    except ListFormatError as exc:
        raise ConfigError(str(exc)) from None


def read_allow_input(path: str) -> List[AllowEntry]:
    """The entries of an allow input file; ConfigError naming the first bad line."""
    if os.path.isdir(path):
        raise ConfigError("--input %s is a folder; it takes a text file, one allow entry a line: %s" % (path, FORMS))
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_INPUT_BYTES + 1)
    except OSError as e:
        raise ConfigError("cannot read allow input %s: %s" % (path, e.strerror or e))
    if len(raw) > MAX_INPUT_BYTES:
        raise ConfigError("%s is over %d bytes; an allow list holds at most %d entries"
                          % (path, MAX_INPUT_BYTES, allowlist.MAX_ENTRIES))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError("%s line %d is not UTF-8 text" % (path, line)) from None
    seen: dict = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = "%s line %d" % (path, n)
        kind = line.split(",", 1)[0].strip().lower()
        if kind == "entry":
            e = _entry_line(line, where)
        elif kind in HEX_LENGTHS:
            e = _hash_line(kind, line.split(","), where)
        else:
            raise ConfigError("%s: %r is not an allow entry; expected %s" % (where, line[:80], FORMS))
        key = (e.kind, e.hash, e.list, e.entry)
        if key in seen:
            first, radius = seen[key]
            if radius != e.radius:
                raise ConfigError("%s: the same %s hash as line %d with another radius (%d, not %d): keep one"
                                  % (where, e.kind, first, e.radius, radius))
            continue
        seen[key] = (n, e.radius)
        if len(seen) > allowlist.MAX_ENTRIES:
            raise ConfigError("%s: an allow list holds at most %d entries" % (where, allowlist.MAX_ENTRIES))
    return [AllowEntry(k[0], hash=k[1], radius=r, list=k[2], entry=k[3]) for k, (_n, r) in seen.items()]


def assemble_allow(*, source: str, version: int, entries: List[AllowEntry], sign, key_id: str,
                   created: int, expires: int) -> bytes:
    """The signed allow list file's bytes."""
    content = allowlist.encode_content(entries)
    section = {"entries": len(set(e.to_bytes() for e in entries))}
    if any(e.kind == "neural" for e in entries):
        section["model"] = DEFAULT_MODEL
    manifest = {
        "format": listfile.FORMAT_VERSION, "source": source, "list": allowlist.LIST_NAME,
        "signal": allowlist.SIGNAL, "version": int(version), "created": int(created), "expires": int(expires),
        "key_id": key_id, "content_length": len(content), "content_sha256": hashlib.sha256(content).hexdigest(),
        "allow": section,
    }
    mbytes = listfile.encode_manifest(manifest)
    data = listfile.serialise(mbytes, sign(listfile.signed_part(mbytes)), content)
    listfile.parse(data)  # what a device will check, checked before anything is written
    return data


def build_allow_list(input_path: str, out_dir: str, source: str, key_path: str, *,
                     expires_days: float = DEFAULT_EXPIRES_DAYS, version: Optional[int] = None,
                     now: Optional[float] = None, warn=None) -> str:
    """Build and sign the next version of ``source``'s allow list from ``input_path``; the file's path.

    Versions roll forward as `lists build` does (the newest in ``out_dir`` + 1). Every check runs
    before anything is written.
    """
    path, _version, _n = _build(input_path, out_dir, source, key_path, expires_days=expires_days,
                                version=version, now=now, warn=warn)
    return path


def _build(input_path, out_dir, source, key_path, *, expires_days=DEFAULT_EXPIRES_DAYS, version=None,
           now=None, warn=None) -> Tuple[str, int, int]:
    check_name("source", source)
    check_build_options(expires_days=expires_days, version=version)
    key = load_private_key(key_path)
    warning = check_key_source(key_path, key, source)
    if warning and warn is not None:
        warn(warning)
    check_out_dir(out_dir)
    entries = read_allow_input(input_path)
    version, _prev = next_version(out_dir, source, allowlist.LIST_NAME, version)
    now = int(time.time() if now is None else now)
    try:
        data = assemble_allow(source=source, version=version, entries=entries, sign=key.sign,
                              key_id=key_id(key.public_key()), created=now, expires=int(now + expires_days * 86400))
    except ListFormatError as e:
        raise ConfigError("cannot build the allow list of %s: %s" % (source, e))
    path = os.path.join(out_dir, list_file_name(source, allowlist.LIST_NAME, version))
    with _undo_on_error() as created:
        _makedirs(out_dir, created)
        _write(path, data, created)
    return path, version, len(entries)


def allow_stats(lf) -> dict:
    """What an allow list holds, for `lists inspect`: counts per kind and each entry described."""
    kinds: dict = {}
    for e in lf.allow or ():
        kinds[e.kind] = kinds.get(e.kind, 0) + 1
    return {"entries": len(lf.allow or ()), "bytes": lf.manifest["content_length"], "kinds": kinds,
            "allowed": [e.describe() for e in lf.allow or ()]}
