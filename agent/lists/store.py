"""Folders of list files, and the one rule by which every part of the agent loads them.

Owns: the file name of a list version (``<source>+<list>.v<version>.gwl``: '+' is outside the
name alphabet, so two lists never share a file name), ``load_folder`` (every file verified on its
own; the newest good version of each list wins; every refused file is kept with its reason, for
logs and status), and ``ListStore``, the state folder's ``lists/`` (atomic installs, old versions
removed after). The daemon, the standalone ICAP service and proxy, `gatewatch scan` and the updater
all load through ``load_folder``. A list of a source whose trusted log key requires it must also
come with its log proof (``<name>.proof`` beside it, checked by ``agent.lists.translog``). Must not
touch: the acceptance rules themselves (``agent.lists.verify``, ``agent.lists.translog``), the network.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

from agent.atomicfile import fsync_dir, write_atomic
from agent.core import listfile
from agent.core.errors import ConfigError, GatewatchError
from agent.lists.translog import STATE_FILE as LOG_STATE_FILE
from agent.lists.translog import FolderSteps, LogState, LogVerifier, proof_path, read_proof
from agent.lists.trust import TrustStore
from agent.lists.verify import DEFAULT_MAX_BYTES, LoadedList, verify_bytes

log = logging.getLogger("gatewatch.lists")

_FILE_RE = re.compile(r"^(?P<source>[A-Za-z0-9][A-Za-z0-9_.-]*)\+(?P<list>[A-Za-z0-9][A-Za-z0-9_.-]*)"
                      r"\.v(?P<version>[0-9]+)\.gwl$")


def list_file_name(source: str, name: str, version: int) -> str:
    """The file name of one list version, on the hub and on the device."""
    return "%s+%s.v%d.gwl" % (source, name, version)


def parse_file_name(name: str) -> Optional[Tuple[str, str, int]]:
    """(source, list, version) of a name made by ``list_file_name``, else None."""
    m = _FILE_RE.match(name)
    return (m.group("source"), m.group("list"), int(m.group("version"))) if m else None


def read_manifest(path: str) -> Optional[dict]:
    """The manifest of a list file, read from its head only (unverified); None if unreadable."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8 or head[:4] != listfile.MAGIC:
                return None
            size = struct.unpack_from("<I", head, 4)[0]
            if size > 1 << 20:
                return None
            return listfile.check_manifest(json.loads(f.read(size)))
    except (OSError, ValueError, GatewatchError):
        return None


def beside(lists_dir: str, file_name: str) -> str:
    """A state file beside the state folder's ``<state>/lists`` (``<state>/<file_name>``), so that it
    survives a wipe of ``lists/``; a store folder under another name (tests, the fleet simulator) gets
    ``<folder>.<file_name>``, so that two stores never share one."""
    lists_dir = os.path.abspath(lists_dir).rstrip(os.sep)
    parent, base = os.path.split(lists_dir)
    return os.path.join(parent, file_name if base == "lists" else base + "." + file_name)


class Refusal(NamedTuple):
    """A list file that did not load, and why."""

    file: str
    reason: str


class FolderLoad(NamedTuple):
    """What ``load_folder`` found: the lists in force and the files it refused."""

    lists: Dict[str, LoadedList]
    refused: List[Refusal]


def gwl_files(directory: str) -> List[str]:
    """The list files of a folder (hidden temp files excluded), in name order."""
    if not os.path.isdir(directory):
        raise ConfigError("list folder %s does not exist (create it, or pass the folder that holds "
                          "the .gwl files)" % directory)
    return sorted(os.path.join(directory, n) for n in os.listdir(directory)
                  if n.endswith(".gwl") and not n.startswith("."))


def load_folder(directory: str, trust: TrustStore, *, now: Optional[float] = None,
                max_bytes: int = DEFAULT_MAX_BYTES, log_verifier: Optional[LogVerifier] = None) -> FolderLoad:
    """Verify every list file of ``directory`` on its own: good lists load, refused ones are listed.

    The newest good version of each list wins; a file under any name loads (its manifest says what
    it is). Each refusal is logged with its reason. Raises only when the folder itself is missing.
    ``log_verifier``: the transparency-log rule and the heads seen (default: a fresh one in memory);
    steps between heads come from the folder's ``<log>.heads`` files.
    """
    loaded: Dict[str, LoadedList] = {}
    refused: List[Refusal] = []
    logv = log_verifier if log_verifier is not None else LogVerifier(trust)
    steps = FolderSteps(directory)
    for path in gwl_files(directory):
        try:
            with open(path, "rb") as f:
                data = f.read(max_bytes + 1)
            lst = verify_bytes(data, trust, now=now, max_bytes=max_bytes, path=path)
            if logv.required(lst.source):
                logv.check_list(lst.manifest, lst.file.signed_bytes(), read_proof(path), steps)
        except (GatewatchError, OSError) as exc:
            log.warning("not loading %s: %s", os.path.basename(path), exc)
            refused.append(Refusal(os.path.basename(path), str(exc)))
            continue
        held = loaded.get(lst.ident)
        if held is None or lst.version > held.version:
            loaded[lst.ident] = lst
    return FolderLoad({k: loaded[k] for k in sorted(loaded)}, refused)


class ListStore:
    """The last good list files in ``<state>/lists``, one file per list version."""

    def __init__(self, directory: str, trust: TrustStore, max_bytes: int = DEFAULT_MAX_BYTES,
                 clock: Callable[[], float] = time.time, log_verifier: Optional[LogVerifier] = None):
        self.directory = directory
        self.trust = trust
        self.max_bytes = max_bytes
        self.clock = clock
        self.refused: List[Refusal] = []
        os.makedirs(directory, exist_ok=True)
        # the newest log heads seen outlive a wipe of lists/, beside versions.json
        self.log = log_verifier if log_verifier is not None else LogVerifier(
            trust, LogState(beside(directory, LOG_STATE_FILE)), clock=clock)

    def remove_leftovers(self) -> int:
        """Delete temp files a crash left behind (``.<name>.tmp-<pid>``); the agent calls this at start."""
        n = 0
        for name in os.listdir(self.directory):
            if name.startswith(".") and ".tmp-" in name:
                try:
                    os.unlink(os.path.join(self.directory, name))
                    n += 1
                except OSError:
                    pass
        return n

    def load(self) -> Dict[str, LoadedList]:
        """The newest good file of each list (``load_folder``); refusals are kept in ``refused``."""
        result = load_folder(self.directory, self.trust, now=self.clock(), max_bytes=self.max_bytes,
                             log_verifier=self.log)
        self.refused = result.refused
        return result.lists

    def path_for(self, source: str, name: str, version: int) -> str:
        """Where a list version is installed."""
        return os.path.join(self.directory, list_file_name(source, name, version))

    def _versions_of(self, ident: str) -> List[Tuple[int, str]]:
        out = []
        for path in gwl_files(self.directory):
            parsed = parse_file_name(os.path.basename(path))
            if parsed is not None:
                if "%s/%s" % parsed[:2] == ident:
                    out.append((parsed[2], path))
                continue
            m = read_manifest(path)  # a file copied in under another name: its manifest decides
            if m is not None and "%s/%s" % (m["source"], m["list"]) == ident:
                out.append((m["version"], path))
        return out

    def install(self, lst: LoadedList, data: bytes, proof: Optional[bytes] = None) -> str:
        """Write the verified ``data`` atomically (its log ``proof`` first, so a list never lies there
        without it), then remove older versions of the same list."""
        path = self.path_for(lst.source, lst.name, lst.version)
        if proof is not None:
            write_atomic(proof_path(path), proof)
        write_atomic(path, data)
        removed = False
        for version, other in self._versions_of(lst.ident):
            if version < lst.version and other != path:
                for name in (other, proof_path(other)):
                    try:
                        os.unlink(name)
                        removed = True
                    except OSError:
                        pass
        if removed:
            fsync_dir(self.directory)
        return path
