"""Atomic file replacement: temp file, fsync, rename, fsync of the directory.

Owns: the one way gatewatch replaces a file so that a power cut leaves the old or the new content,
never a mix, and the bounded read of such a state file back. Must not touch what the bytes mean.
"""

from __future__ import annotations

import os


def fsync_dir(path: str) -> None:
    """Make a rename or unlink inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably; on error the old file stays."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    tmp = os.path.join(directory, ".%s.tmp-%d" % (os.path.basename(path), os.getpid()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(directory)


def read_capped(path: str, max_bytes: int):
    """The bytes of a state file, or None when there is none; ValueError when it is over ``max_bytes``
    (read no further), OSError when it cannot be read."""
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except FileNotFoundError:
        return None
    if len(raw) > max_bytes:
        raise ValueError("over %d bytes" % max_bytes)
    return raw
