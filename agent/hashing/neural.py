"""Neural perceptual hash: a small int8 TFLite network maps an image to a short binary code.

Owns: finding a TFLite runtime, loading ``models/<name>.tflite`` after checking it against the
sha256 in its manifest ``models/<name>.json``, the preprocessing (shared with the training script
``models/train_neural.py``, which imports it from here so training and inference see the same pixels),
and turning the network's tanh outputs into code bytes. It owns no matching and no list format.

Why next to PDQ: PDQ survives re-encoding and rescaling but not geometry (a 10% crop moves it by
tens of bits). The network was trained (self-supervised, on benign package sample photos and generated
pictures only) to keep crops, padding, small rotations, rescaling, recompression and colour changes
of one picture within a small Hamming radius. Measured figures: docs/neural.md.

Code layout: ``bits`` (manifest ``output_bits``, 128) outputs; bit i is output i > 0 and sits where PDQ's
bit i sits in agent.core.lsh: ``(int.from_bytes(code, "big") >> i) & 1`` (so bit 0 is the least
significant bit of the last byte). ``margins[i]`` is |output i|: small means bit i flips easily (for
multi-probe LSH, like PDQ's margins).

Preprocessing (``preprocess``): RGB (alpha flattened onto white) -> luma ("L", ITU-R 601) -> downscale
so the longer side is at most 256 -> turn back a picture turned with its canvas grown (``derotate``:
four uniform corner triangles whose long sides are straight edges at one angle of 1-20 degrees; only
when the manifest's ``input.derotate`` is true) -> trim near-uniform borders (padding, letterboxing;
lines whose 95th-percentile deviation from the border colour is within ``trim_tolerance`` grey levels) -> resize to
the model's input (64x64, bilinear, antialiased) -> per-image standardisation (zero mean, unit
variance, clipped to +-3). Input tensor: float32 NHWC [1, 64, 64, 1].

Runtimes, in order: ``ai_edge_litert`` (PyPI ``ai-edge-litert``, x86_64/aarch64),
``tflite_runtime`` (PyPI ``tflite-runtime``, older wheels incl. armv7), then ``tensorflow.lite``
(build machines). None installed: ``RuntimeMissing`` (a ConfigError), never a silent skip.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import threading
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from agent.core.errors import ConfigError, ImageError

__all__ = [
    "RuntimeMissing",
    "ModelError",
    "MODELS_DIR",
    "DEFAULT_MODEL",
    "find_runtime",
    "load_manifest",
    "preprocess",
    "query_variants",
    "NeuralHasher",
    "get_hasher",
    "neural_hash",
    "neural_hash_bytes",
    "hamming",
]

MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "models")
DEFAULT_MODEL = "neural-v3"

WORK_SIDE = 256  # longer side of the working image the border trim runs on
# grey levels: a border line is one whose 95th-percentile deviation stays within this. Padding is
# near-flat even after JPEG; 12 (neural-v1) also ate low-contrast content (a plain wall, the moon's
# surface) by different amounts in a crop and its original. The manifest's input.trim_tolerance wins.
TRIM_TOLERANCE = 4
TRIM_MAX_FRACTION = 0.45  # never trim more than this of a dimension (on each axis, both sides together)
NORM_CLIP = 3.0
# Derotation (``rotation_of``): a picture turned with its canvas grown shows four uniform corner
# triangles whose long sides are the picture's edges. Fill pixels are within FILL_TOLERANCE grey levels
# of the corners' colour (JPEG rings near the picture's edge); an edge is a straight line when at least
# EDGE_INLIERS of its fill runs lie within EDGE_RESIDUAL px of it; the four edges agree within
# ANGLE_AGREEMENT degrees; turns of DEROTATE_MIN..DEROTATE_MAX degrees are undone. Measured on the
# held-out photos with the same weights (bench/bench_neural.py, docs/neural.md "Derotation"): 8-degree
# turns found on the device 7/17 without, 16/17 with.
FILL_TOLERANCE = 12
EDGE_RESIDUAL = 1.5
EDGE_INLIERS = 0.5
ANGLE_AGREEMENT = 1.5
DEROTATE_MIN, DEROTATE_MAX = 1.0, 20.0
# Device-side extra queries (docs/neural.md, "Extra queries"): a copy of the query zoomed out by 12%
# (reflected borders: the inverse of a crop) and turned by 6 degrees either way (the inverse of a
# small rotation). Their codes only look up band keys, so a crop or rotation that moved the code's
# bands can still find its entry; confirmation still compares the query's own code with the
# entry at the list's threshold. Measured on held-out photos: 10% crop found 13/17 -> 17/17.
QUERY_VARIANTS = (("zoom-out", 0.12), ("rotate", 6.0), ("rotate", -6.0))

try:  # Pillow >= 9.1
    _BILINEAR = Image.Resampling.BILINEAR
except AttributeError:  # pragma: no cover - Pillow 9.0
    _BILINEAR = Image.BILINEAR


class RuntimeMissing(ConfigError):
    """No TFLite runtime (ai-edge-litert, tflite-runtime or tensorflow) is installed."""


class ModelError(ConfigError):
    """The model or its manifest is missing, malformed, or does not match the manifest's sha256."""


def find_runtime():
    """(module name, Interpreter class) of the first installed TFLite runtime; RuntimeMissing if none."""
    tried = []
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore

        return "ai_edge_litert", Interpreter
    except ImportError as exc:
        tried.append("ai_edge_litert (%s)" % exc)
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore

        return "tflite_runtime", Interpreter
    except ImportError as exc:
        tried.append("tflite_runtime (%s)" % exc)
    try:
        import tensorflow as tf  # type: ignore

        return "tensorflow", tf.lite.Interpreter
    except ImportError as exc:
        tried.append("tensorflow (%s)" % exc)
    raise RuntimeMissing(
        "no TFLite runtime installed for the neural hash: pip install ai-edge-litert (x86_64/aarch64) "
        "or tflite-runtime (older Pythons; PyPI has no armv7 wheel for Python 3.11); tried " + "; ".join(tried)
    )


def load_manifest(name: str = DEFAULT_MODEL, models_dir: Optional[str] = None) -> Dict:
    """The manifest ``<models_dir>/<name>.json`` as a dict; ModelError if missing or malformed."""
    path = os.path.join(models_dir or MODELS_DIR, name + ".json")
    try:
        with open(path, "r", encoding="utf-8") as fh:
            manifest = json.load(fh)
    except FileNotFoundError:
        raise ModelError("neural model manifest not found: %s" % path) from None
    except (OSError, ValueError) as exc:
        raise ModelError("neural model manifest unreadable: %s (%s)" % (path, exc)) from None
    for key, kind in (("name", str), ("sha256", str), ("input", dict), ("output_bits", int)):
        if not isinstance(manifest.get(key), kind):
            raise ModelError("neural model manifest %s: field %r missing or not %s" % (path, key, kind.__name__))
    return manifest


# --- preprocessing (shared with models/train_neural.py) -------------------------------------------

def _to_luma(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    if img.mode != "L":
        img = img.convert("RGB").convert("L")
    return img


def _border_lines(lines: np.ndarray, limit: int, tolerance: float) -> int:
    """How many leading lines (rows of ``lines``) are near-uniform in the colour of the first one."""
    ref = float(np.median(lines[0]))
    dev = np.abs(lines[:limit].astype(np.float32) - ref)
    ok = np.percentile(dev, 95, axis=1) <= tolerance
    if ok.all():
        return limit
    return int(np.argmin(ok))  # first line that is not border


def trim_box(a: np.ndarray, tolerance: float = TRIM_TOLERANCE) -> Tuple[int, int, int, int]:
    """(top, bottom, left, right) line counts of near-uniform borders of uint8 luma ``a``."""
    h, w = a.shape
    if h < 8 or w < 8:
        return 0, 0, 0, 0
    lim_h, lim_w = int(h * TRIM_MAX_FRACTION / 2), int(w * TRIM_MAX_FRACTION / 2)
    top = _border_lines(a, lim_h, tolerance)
    bottom = _border_lines(a[::-1], lim_h, tolerance)
    left = _border_lines(a.T, lim_w, tolerance)
    right = _border_lines(a.T[::-1], lim_w, tolerance)
    return top, bottom, left, right


def _fill_runs(a: np.ndarray, colour: float) -> np.ndarray:
    """For each column of ``a``: how many leading rows are fill (within FILL_TOLERANCE of ``colour``)."""
    notfill = np.abs(a.astype(np.int16) - int(round(colour))) > FILL_TOLERANCE
    return np.where(notfill.any(axis=0), np.argmax(notfill, axis=0), a.shape[0]).astype(np.float64)


def _line(xs: np.ndarray, ys: np.ndarray):
    """(slope, intercept, inlier fraction) of the line most runs ``ys`` lie on, or None.

    Dark picture content beside a dark fill lengthens runs, so plain least squares is pulled off the
    edge: take the line through two of 16 sample points that most points lie within EDGE_RESIDUAL of
    (deterministic), then refit it by least squares on those points."""
    idx = np.linspace(0, len(xs) - 1, 16).astype(int)
    i, j = np.triu_indices(len(idx), 1)
    x1, y1 = xs[idx[i]], ys[idx[i]]
    m = (ys[idx[j]] - y1) / (xs[idx[j]] - x1)
    counts = (np.abs(ys[None, :] - (y1[:, None] + m[:, None] * (xs[None, :] - x1[:, None]))) <= EDGE_RESIDUAL).sum(1)
    k = int(np.argmax(counts))  # the first of the best: deterministic
    keep = np.abs(ys - (m[k] * xs + (y1[k] - m[k] * x1[k]))) <= EDGE_RESIDUAL
    if keep.sum() < 8:
        return None
    m, b = np.polyfit(xs[keep], ys[keep], 1)
    keep = np.abs(ys - (m * xs + b)) <= EDGE_RESIDUAL
    return float(m), float(b), float(keep.mean())


def _edge_from_top(a: np.ndarray, colour: float):
    """(tilt in degrees, inlier fraction) of the picture edge seen from the top border of ``a``, or None.

    Seen from a border, a turned picture's fill runs form a V: its tip is the picture's corner touching
    the border, its long side the picture's edge at a small angle to the border."""
    w = a.shape[1]
    runs = _fill_runs(a, colour)
    tip = int(np.argmin(runs))
    lo, hi = (0, tip) if tip >= w / 2 else (tip, w)
    n = hi - lo
    if n < 24:
        return None
    xs = np.arange(lo + n // 8, hi - n // 8, dtype=np.float64)
    fit = _line(xs, runs[xs.astype(int)])
    if fit is None or fit[0] == 0:
        return None
    m, b, inliers = fit
    if abs(-b / m - tip) > 0.05 * w + 3:  # the edge must run into the corner touching the border
        return None
    return math.degrees(math.atan(m)), inliers


def rotation_of(a: np.ndarray) -> Optional[float]:
    """The angle (degrees, counter-clockwise as PIL's ``rotate``) by which uint8 luma ``a`` looks turned
    with its canvas grown (four uniform corners, four straight edges at one angle), or None."""
    h, w = a.shape
    if h < 32 or w < 32:
        return None
    corners = [float(np.median(c)) for c in (a[:2, :2], a[:2, -2:], a[-2:, :2], a[-2:, -2:])]
    if max(corners) - min(corners) > FILL_TOLERANCE:
        return None
    colour = float(np.median(corners))
    edges = []
    for k in range(4):  # each border in turn seen as the top one
        e = _edge_from_top(np.rot90(a, k), colour)
        if e is None or e[1] < EDGE_INLIERS:
            return None
        edges.append(e)
    weights = np.array([e[1] for e in edges])
    tilts = np.array([e[0] for e in edges])
    tilt = float((tilts * weights).sum() / weights.sum())
    if np.abs(tilts - tilt).max() > ANGLE_AGREEMENT or not DEROTATE_MIN <= abs(tilt) <= DEROTATE_MAX:
        return None
    return -tilt  # a counter-clockwise turn makes the runs from the top fall from left to right


def derotate(img: Image.Image) -> Image.Image:
    """``img`` (luma) turned back and cut to the picture when ``rotation_of`` finds it turned; else ``img``."""
    angle = rotation_of(np.asarray(img, dtype=np.uint8))
    if angle is None:
        return img
    w, h = img.size
    t = math.radians(abs(angle))
    c, s = math.cos(t), math.sin(t)
    # the grown canvas: w = W cos + H sin, h = W sin + H cos; solved for the picture's W, H
    pw, ph = (w * c - h * s) / (c * c - s * s), (h * c - w * s) / (c * c - s * s)
    if not (16 <= pw <= w and 16 <= ph <= h):  # no picture of that size fits: not a grown canvas after all
        return img
    inset = 2  # the edges' interpolated blend with the fill
    box = (int(math.ceil((w - pw) / 2 + inset)), int(math.ceil((h - ph) / 2 + inset)),
           int((w + pw) / 2 - inset), int((h + ph) / 2 - inset))
    return img.rotate(-angle, resample=_BILINEAR, expand=False).crop(box)


def _working(img: Image.Image, trim_tolerance: float, derotate_turns: bool = True) -> Image.Image:
    """Luma, longer side <= WORK_SIDE, turned back if it looks turned (``derotate``), near-uniform borders
    trimmed: what the network's input is cut from."""
    img = _to_luma(img)
    w, h = img.size
    if max(w, h) > WORK_SIDE:
        s = WORK_SIDE / float(max(w, h))
        img = img.resize((max(1, int(round(w * s))), max(1, int(round(h * s)))), _BILINEAR)
    if derotate_turns:
        img = derotate(img)
    a = np.asarray(img, dtype=np.uint8)
    top, bottom, left, right = trim_box(a, trim_tolerance)
    if top or bottom or left or right:
        a = a[top:a.shape[0] - bottom, left:a.shape[1] - right]
        img = Image.fromarray(np.ascontiguousarray(a), "L")
    return img


def preprocess(img: Image.Image, size: int = 64, trim_tolerance: float = TRIM_TOLERANCE,
               derotate_turns: bool = True) -> np.ndarray:
    """The network input for ``img``: float32 [1, size, size, 1], as in training (see module doc)."""
    return _standardise(_working(img, trim_tolerance, derotate_turns), size)


def query_variants(img: Image.Image, trim_tolerance: float = TRIM_TOLERANCE, derotate_turns: bool = True):
    """The extra query pictures of ``img`` (``QUERY_VARIANTS``), as working images (see ``_working``)."""
    base = _working(img, trim_tolerance, derotate_turns)
    out = []
    for kind, amount in QUERY_VARIANTS:
        if kind == "zoom-out":  # what the picture may have looked like before a crop: reflected borders
            a = np.asarray(base)
            py, px = int(a.shape[0] * amount / 2), int(a.shape[1] * amount / 2)
            if min(py, px) < 1 or py >= a.shape[0] or px >= a.shape[1]:
                continue
            out.append(Image.fromarray(np.pad(a, ((py, py), (px, px)), mode="reflect"), "L"))
        else:  # rotate back by a small angle, canvas grown as a rotation usually leaves it
            # not derotated: that would undo the very turn this query is made of
            turned = base.rotate(amount, resample=_BILINEAR, expand=True, fillcolor=0)
            out.append(_working(turned, trim_tolerance, derotate_turns=False))
    return out


def _standardise(img: Image.Image, size: int) -> np.ndarray:
    x = np.asarray(img.resize((size, size), _BILINEAR), dtype=np.float32)
    x -= x.mean()
    x /= max(float(x.std()), 8.0)
    np.clip(x, -NORM_CLIP, NORM_CLIP, out=x)
    return x.reshape(1, size, size, 1)


# --- inference ------------------------------------------------------------------------------------

def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class NeuralHasher:
    """One loaded model. ``code(img)`` -> bytes; thread-safe (one interpreter, guarded by a lock)."""

    def __init__(self, name: str = DEFAULT_MODEL, models_dir: Optional[str] = None, threads: int = 1):
        self.manifest = load_manifest(name, models_dir)
        self.path = os.path.join(models_dir or MODELS_DIR, name + ".tflite")
        if not os.path.isfile(self.path):
            raise ModelError("neural model file not found: %s" % self.path)
        actual = _file_sha256(self.path)
        expected = self.manifest["sha256"].lower()
        if actual != expected:
            raise ModelError(
                "neural model %s does not match its manifest: sha256 %s, manifest says %s; refusing to load it"
                % (self.path, actual, expected)
            )
        self.runtime, interpreter_cls = find_runtime()
        self.bits = int(self.manifest["output_bits"])
        self.size = int(self.manifest["input"].get("height", 64))
        self.trim_tolerance = float(self.manifest["input"].get("trim_tolerance", TRIM_TOLERANCE))
        # a manifest without the field (neural-v2) was measured without derotation: feed it what it was measured on
        self.derotate = self.manifest["input"].get("derotate", False) is True
        self._interp = interpreter_cls(model_path=self.path, num_threads=max(1, int(threads)))
        self._interp.allocate_tensors()
        inp = self._interp.get_input_details()[0]
        out = self._interp.get_output_details()[0]
        if tuple(inp["shape"]) != (1, self.size, self.size, 1):
            raise ModelError("neural model input shape %s, manifest says 1x%dx%dx1" % (inp["shape"], self.size, self.size))
        if int(np.prod(out["shape"])) != self.bits:
            raise ModelError("neural model output shape %s, manifest says %d bits" % (out["shape"], self.bits))
        self._in, self._out = inp, out
        self._lock = threading.Lock()

    def _run(self, x: np.ndarray) -> np.ndarray:
        inp, out = self._in, self._out
        if inp["dtype"] != np.float32:  # fully-integer model: quantize the input ourselves
            scale, zero = inp["quantization"]
            x = np.clip(np.round(x / scale + zero), np.iinfo(inp["dtype"]).min, np.iinfo(inp["dtype"]).max)
            x = x.astype(inp["dtype"])
        with self._lock:
            self._interp.set_tensor(inp["index"], x)
            self._interp.invoke()
            y = self._interp.get_tensor(out["index"]).reshape(-1)
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32)

    def outputs(self, img: Image.Image) -> np.ndarray:
        """The raw tanh outputs (float32[bits]) for ``img``."""
        return self._run(preprocess(img, self.size, self.trim_tolerance, self.derotate))

    def code_and_margins(self, img: Image.Image) -> Tuple[bytes, np.ndarray]:
        """(code bytes, |output| per bit) of ``img``."""
        y = self.outputs(img)
        return np.packbits((y > 0)[::-1]).tobytes(), np.abs(y)

    def variant_codes(self, img: Image.Image) -> List[Tuple[bytes, np.ndarray]]:
        """(code, margins) of each extra query picture of ``img`` (``query_variants``), for band lookups only."""
        out = []
        for v in query_variants(img, self.trim_tolerance, self.derotate):
            y = self._run(_standardise(v, self.size))
            out.append((np.packbits((y > 0)[::-1]).tobytes(), np.abs(y)))
        return out

    def code(self, img: Image.Image) -> bytes:
        """The binary code of ``img``: bits/8 bytes; bit i is output i > 0 (module doc: layout)."""
        return self.code_and_margins(img)[0]


_HASHERS: Dict[Tuple[str, str], NeuralHasher] = {}
_HASHERS_LOCK = threading.Lock()


def get_hasher(name: str = DEFAULT_MODEL, models_dir: Optional[str] = None) -> NeuralHasher:
    """The process-wide hasher for ``name`` (loaded and checked once)."""
    key = (name, models_dir or MODELS_DIR)
    with _HASHERS_LOCK:
        hasher = _HASHERS.get(key)
        if hasher is None:
            hasher = _HASHERS[key] = NeuralHasher(name, models_dir)
        return hasher


def neural_hash(img: Image.Image, name: str = DEFAULT_MODEL, models_dir: Optional[str] = None) -> bytes:
    """The neural code (bytes) of a decoded image with the process-wide hasher."""
    return get_hasher(name, models_dir).code(img)


def neural_hash_bytes(data: bytes, name: str = DEFAULT_MODEL, models_dir: Optional[str] = None) -> bytes:
    """The neural code of encoded image bytes. Decoding goes through the same format allowlist and
    header size checks as agent.hashing.imaging; ImageError for anything it refuses."""
    from agent.hashing import imaging

    data = bytes(data)
    limits = imaging.DEFAULT_LIMITS
    if not data:
        raise ImageError("empty file")
    if len(data) > limits.max_bytes:
        raise ImageError("file too large: %d bytes exceeds limit %d" % (len(data), limits.max_bytes))
    fmt = imaging.sniff(data)
    if fmt is None or fmt not in limits.formats:
        raise ImageError("not an image we accept")
    size = imaging.header_size(fmt, data)
    if size is not None and (size[0] * size[1] > limits.max_pixels or max(size) > limits.max_side):
        raise ImageError("image too large: %dx%d" % size)
    hasher = get_hasher(name, models_dir)
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as im:
            if fmt == "JPEG":
                im.draft("L", (WORK_SIDE, WORK_SIDE))  # never smaller than the working image
            im.load()
            return hasher.code(im)
    except ImageError:
        raise
    except Exception as exc:  # Pillow's many exception types
        raise ImageError("corrupt %s image (%s)" % (fmt, type(exc).__name__)) from None


def hamming(a: bytes, b: bytes) -> int:
    """Hamming distance of two equal-length codes."""
    if len(a) != len(b):
        raise ValueError("codes of different lengths: %d and %d bytes" % (len(a), len(b)))
    return int(np.unpackbits(np.frombuffer(bytes(a), np.uint8) ^ np.frombuffer(bytes(b), np.uint8)).sum())
