"""The file intake: walks paths given on the command line and reads them with a size cap.

Owns: expanding files and folders (recursively, in a stable order) and reading bytes. Must not touch
hashing or verdicts.
"""

from __future__ import annotations

import os
import stat
from typing import Iterable, Iterator, Optional, Tuple

from agent.hashing.imaging import DEFAULT_LIMITS


def iter_files(paths: Iterable[str], max_bytes: int = DEFAULT_LIMITS.max_bytes
               ) -> Iterator[Tuple[str, Optional[bytes], Optional[str]]]:
    """Yield (path, bytes, None) per readable file, or (path, None, reason) when it cannot be read."""
    for top in paths:
        if os.path.isdir(top):
            for d, dirs, files in os.walk(top):
                dirs.sort()
                for f in sorted(files):
                    yield _read(os.path.join(d, f), max_bytes)
        else:
            yield _read(top, max_bytes)


def _read(path: str, max_bytes: int) -> Tuple[str, Optional[bytes], Optional[str]]:
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            # a FIFO or a device would block the walk (or never end): it is no image file
            return path, None, "not a regular file"
        if st.st_size > max_bytes:
            return path, None, "file of %d bytes exceeds limit %d" % (st.st_size, max_bytes)
        # O_NONBLOCK: a FIFO swapped in after the stat must not hang the scan either
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return path, None, "not a regular file"
            return path, f.read(max_bytes + 1), None
    except OSError as e:
        return path, None, "cannot read: %s" % (e.strerror or e)
