"""`gatewatch hash`: digests, PDQ and (with a TFLite runtime) the neural code of files, one JSON object a line
(the file intake and imaging do the work)."""

from __future__ import annotations

import json
import os
import sys

from agent.core.errors import ImageError
from agent.intake.files import iter_files
from agent.hashing.imaging import digests, hash_image

HELP = "print the digests and PDQ hash of image files, one JSON object a line"
DESCRIPTION = """\
Prints path, bytes, sha256, sha1, md5, pdq (64 hex) and pdq_quality for each file (folders are read
recursively), and neural (32 hex, the code of the shipped model in models/) when a TFLite runtime is
installed; a file that cannot be hashed as an image prints its digests with pdq null and a reason.
Exit 0 when every file was hashed, 1 when some could not be, 2 when a path does not exist or a folder
holds no files. This is for the operator's own files: never paste its output anywhere for images that
did not match."""


def add_arguments(p) -> None:
    """Arguments of `gatewatch hash`."""
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (recursive)")
    p.add_argument("--full", action="store_true", help="decode at full resolution (no JPEG draft decoding)")


def _neural_hasher():
    """The neural hasher when a runtime and the model are present, else None (the field is left out)."""
    try:
        from agent.hashing import neural

        return neural.get_hasher()
    except Exception:  # RuntimeMissing, ModelError, or a runtime that cannot load the model
        return None


def main(args) -> int:
    """Print the digests and PDQ hash of image files."""
    missing = [p for p in args.paths if not os.path.exists(p)]
    empty = [p for p in args.paths if os.path.isdir(p) and not any(fs for _, _, fs in os.walk(p))]
    failed = 0
    hasher = _neural_hasher()
    for path, data, err in iter_files([p for p in args.paths if p not in missing]):
        out = {"path": path}
        if err is not None:
            out.update(error=err)
            failed += 1
        else:
            sha256, sha1, md5 = digests(data)
            out.update(bytes=len(data), sha256=sha256.hex(), sha1=sha1.hex(), md5=md5.hex())
            try:
                h = hash_image(data, fast=not args.full, neural=hasher)
                out.update(pdq=h.pdq.hex() if h.pdq is not None else None, pdq_quality=h.pdq_quality)
                if hasher is not None:
                    out.update(neural=h.neural.hex() if h.neural is not None else None)
            except ImageError as e:
                out.update(pdq=None, pdq_quality=None, error=str(e))
                if hasher is not None:
                    out.update(neural=None)
                failed += 1
        sys.stdout.write(json.dumps(out) + "\n")
    if missing or empty:
        # like scan: the other files were hashed, but a path that is not there is a usage error
        for p in missing:
            print("gatewatch hash: error: no such file or folder: %s" % p, file=sys.stderr)
        for p in empty:
            print("gatewatch hash: error: folder %s holds no files" % p, file=sys.stderr)
        return 2
    return 1 if failed else 0
