"""A case rejected as a false positive becomes allow-list input, and the allow list is rebuilt.

Owns the lines this hub appends to its allow input file for a source (``<allow-dir>/<source>.txt``,
one allow entry a line, the format of `gatewatch-hub allow build`): ``entry,<source>/<list>,<entry
id>`` for the case's list entry, and, where the hub's own entries file of that list holds the
entry's hash, ``<signal>,<hex>`` (with ``,<radius>`` for pdq and neural). Then it calls the allow
list builder (``rebuild_allow_list``) so that devices load the new signed allow list. Must not
touch the allow list's format or its signature (``tools.allow``, the device's side).
"""

from __future__ import annotations

import glob
import json
import logging
import os
from typing import Callable, Dict, List, Optional

from agent.atomicfile import write_atomic
from agent.core import allowlist
from agent.core.errors import ConfigError
from agent.lists.store import parse_file_name

log = logging.getLogger(__name__)

#: the largest radius a rejection may ask for: one every perceptual signal accepts (neural's maximum is
#: the smaller), so that a line this hub writes never stops every later build of the allow list
MAX_RADIUS = min(allowlist.MAX_RADIUS.values())


def check_radius(radius: Optional[int]) -> Optional[int]:
    """``--allow-radius``: None (each signal's default) or 0..MAX_RADIUS; ConfigError otherwise."""
    if radius is not None and (type(radius) is not int or not 0 <= radius <= MAX_RADIUS):
        raise ConfigError("--allow-radius must be a whole number from 0 to %d bits (the signal's default without it: "
                          "pdq %d, neural %d), not %r" % (MAX_RADIUS, allowlist.DEFAULT_RADIUS["pdq"],
                                                         allowlist.DEFAULT_RADIUS["neural"], radius))
    return radius


def entry_hash(entries_dir: Optional[str], source: str, list_name: str, entry: str) -> Optional[str]:
    """The hex hash of ``entry`` in the newest hub entries file of source/list that has it, or None."""
    if not entries_dir or not os.path.isdir(entries_dir):
        return None
    found = []
    for path in glob.glob(os.path.join(glob.escape(entries_dir), "*.entries.json")):
        parsed = parse_file_name(os.path.basename(path)[:-len(".entries.json")] + ".gwl")
        if parsed and parsed[:2] == (source, list_name):
            found.append((parsed[2], path))
    for _version, path in sorted(found, reverse=True):
        try:
            with open(path, "r", encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            log.warning("cannot read entries %s: %s", path, e)
            continue
        for e in doc.get("entries", []):
            if isinstance(e, dict) and e.get("id") == entry and isinstance(e.get("hash"), str):
                return e["hash"].lower()
    return None


def allow_lines(case: dict, entries_dir: Optional[str], radius: Optional[int] = None) -> List[str]:
    """The allow input lines for a rejected case: the entry line, and the hash line where the hash is known."""
    for field in (case["source"], case["list"], case["entry"]):
        if "," in field or "\n" in field or "\r" in field:
            raise ConfigError("case %s: %r cannot go into an allow line (a comma or line break)" % (case["id"], field))
    lines = ["entry,%s/%s,%s" % (case["source"], case["list"], case["entry"])]
    h = entry_hash(entries_dir, case["source"], case["list"], case["entry"])
    if h and case["signal"] in allowlist.PERCEPTUAL:
        r = allowlist.DEFAULT_RADIUS[case["signal"]] if radius is None else radius
        lines.append("%s,%s,%d" % (case["signal"], h, r))
    elif h:
        lines.append("%s,%s" % (case["signal"], h))
    return lines


def append_lines(path: str, lines: List[str]) -> List[str]:
    """Append the ``lines`` not yet in the file (atomically, the file is rewritten); returns those added."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = "# allow input: one allow entry a line (gatewatch-hub allow build --input)\n"
    have = {ln.strip() for ln in text.splitlines()}
    added = [ln for ln in lines if ln not in have]
    if added:
        if text and not text.endswith("\n"):
            text += "\n"
        write_atomic(path, (text + "".join(ln + "\n" for ln in added)).encode("utf-8"), mode=0o600)
    return added


def rebuild_allow_list(input_path: str, out_dir: str, source: str, key_path: str) -> object:
    """Build and sign the allow list of ``source`` from ``input_path`` into ``out_dir`` (the device branch's builder)."""
    try:
        from tools.allow import build_allow_list
    except ImportError:
        raise ConfigError("the allow list builder (gatewatch-hub allow build) is not installed in this hub; "
                          "the allow input %s has the new lines and is built once it is" % input_path) from None
    return build_allow_list(input_path, out_dir, source, key_path)


class AllowFeed:
    """Called with each case this hub rejects (or that a partner rejects) for a source it serves."""

    def __init__(self, allow_dir: str, publish_dir: str, keys: Dict[str, str], entries_dir: Optional[str] = None,
                 radius: Optional[int] = None, builder: Callable[[str, str, str, str], object] = rebuild_allow_list):
        self.allow_dir = allow_dir
        self.publish_dir = publish_dir
        self.keys = keys
        self.entries_dir = entries_dir
        self.radius = check_radius(radius)
        self.builder = builder
        self.built = 0
        self.errors: List[str] = []

    def input_path(self, source: str) -> str:
        """The allow input file of ``source``."""
        return os.path.join(self.allow_dir, "%s.txt" % source)

    def __call__(self, case: dict) -> List[str]:
        os.makedirs(self.allow_dir, exist_ok=True)
        path = self.input_path(case["source"])
        added = append_lines(path, allow_lines(case, self.entries_dir, self.radius))
        key = self.keys.get(case["source"])
        if key is None:
            msg = "no signing key for source %s: the allow input %s is updated, the list not rebuilt" % (
                case["source"], path)
            log.warning(msg)
            self.errors.append(msg)
            return added
        try:
            self.builder(path, self.publish_dir, case["source"], key)
            self.built += 1
        except Exception as e:  # the decision stands; the operator rebuilds by hand (logged, counted)
            log.error("allow list of %s not rebuilt: %s", case["source"], e)
            self.errors.append(str(e))
        return added
