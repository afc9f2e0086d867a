"""Print the digests and PDQ hash of image files, one JSON object a line.

Prints path, bytes, sha256, sha1, md5, pdq (64 hex) and pdq_quality; a file that cannot be hashed as
an image prints its digests with pdq null and a reason. Exit 0 when every file was hashed, 1 otherwise.
This is for the operator's own files: never paste its output anywhere for images that did not match.
"""

from __future__ import annotations

import json
import sys

from agent.core.errors import ImageError
from agent.intake.files import iter_files
from agent.hashing.imaging import digests, hash_image


def add_arguments(p) -> None:
    """Arguments of `gatewatch hash`."""
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (recursive)")
    p.add_argument("--full", action="store_true", help="decode at full resolution (no JPEG draft decoding)")


def main(args) -> int:
    """Run `gatewatch hash`."""
    failed = 0
    for path, data, err in iter_files(args.paths):
        out = {"path": path}
        if err is not None:
            out.update(error=err)
            failed += 1
        else:
            sha256, sha1, md5 = digests(data)
            out.update(bytes=len(data), sha256=sha256.hex(), sha1=sha1.hex(), md5=md5.hex())
            try:
                h = hash_image(data, fast=not args.full)
                out.update(pdq=h.pdq.hex() if h.pdq is not None else None, pdq_quality=h.pdq_quality)
            except ImageError as e:
                out.update(pdq=None, pdq_quality=None, error=str(e))
                failed += 1
        sys.stdout.write(json.dumps(out) + "\n")
    return 1 if failed else 0
