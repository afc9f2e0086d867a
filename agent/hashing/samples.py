"""Benign stand-in images for "known material": generated pictures, the sample photos scikit-image
ships, and a tiny built-in PNG.

Tests, the demo, benchmarks and the self-test build their lists from these. Nothing here reads the
network or anything but the installed scikit-image data folder. It owns no hashing (``agent.hashing.pdq``,
``agent.hashing.imaging``).
"""

from __future__ import annotations

import base64
import io
import os
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["generate_image", "encode", "transform", "TRANSFORMS", "sample_images", "tiny_png"]

try:  # Pillow >= 9.1
    _LANCZOS = Image.Resampling.LANCZOS
    _BICUBIC = Image.Resampling.BICUBIC
    _FLIP_LR = Image.Transpose.FLIP_LEFT_RIGHT
    _ROT90 = Image.Transpose.ROTATE_90
except AttributeError:  # pragma: no cover - Pillow 9.0
    _LANCZOS = Image.LANCZOS
    _BICUBIC = Image.BICUBIC
    _FLIP_LR = Image.FLIP_LEFT_RIGHT
    _ROT90 = Image.ROTATE_90


def _smooth_field(rng: np.random.Generator, size: Tuple[int, int], cells: Tuple[int, int], channels: int):
    """A smooth random field: a coarse random grid upscaled bicubically, float32 0..1, HxWxC."""
    w, h = size
    grid = (rng.random((cells[1], cells[0], channels)) * 255).astype(np.uint8)
    mode = "RGB" if channels == 3 else "L"
    small = Image.fromarray(grid if channels == 3 else grid[:, :, 0], mode)
    big = np.asarray(small.resize((w, h), _BICUBIC), dtype=np.float32) / 255.0
    return big if channels == 3 else big[:, :, None]


def _random_color(rng: np.random.Generator, alpha: int = 255) -> Tuple[int, int, int, int]:
    r, g, b = (int(x) for x in rng.integers(0, 256, 3))
    return (r, g, b, alpha)


def generate_image(seed: int, size: Tuple[int, int] = (1024, 768)) -> Image.Image:
    """A deterministic, natural-looking RGB picture for ``seed``: gradients, shapes, texture, noise.

    Different seeds give unrelated PDQ hashes (mean distance about 128) and PDQ quality is high.
    Same seed, same numpy and Pillow: the same pixels. Tests should compute hashes, not pin them.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError("seed must be an int, got %r" % (seed,))
    w, h = int(size[0]), int(size[1])
    if w < 1 or h < 1:
        raise ValueError("size must be positive, got %r" % (size,))
    rng = np.random.default_rng([0x6A7E, int(seed) & 0xFFFFFFFFFFFF])

    # Base: a linear gradient between two colours in a random direction plus a smooth colour field.
    # Everything is float32 with explicit scalars, so numpy 1.x and 2.x (NEP 50 promotion) take the
    # same arithmetic path. Pixels can still move by a unit across numpy/Pillow versions (SIMD sin,
    # resampling); hashes of the same seed stay within a few bits.
    f32 = np.float32
    angle = float(rng.uniform(0, 2 * np.pi))
    xs = np.arange(w, dtype=f32)
    ys = np.arange(h, dtype=f32)
    t = (ys / f32(h) * f32(np.sin(angle)))[:, None] + (xs / f32(w) * f32(np.cos(angle)))[None, :]
    t -= t.min()
    t /= f32(max(float(t.max()), 1e-6))
    c0 = rng.random(3).astype(f32)
    c1 = rng.random(3).astype(f32)
    base = c0 + (c1 - c0) * t[:, :, None]
    cells = (int(rng.integers(3, 7)), int(rng.integers(3, 6)))
    base += _smooth_field(rng, (w, h), cells, 3)
    base *= f32(0.5)

    # Texture: octaves of value noise modulate brightness (cloud/foliage-like structure).
    tex = np.full((h, w, 1), f32(1.0), dtype=f32)
    amp = f32(0.9)
    for octave in range(4):
        n = 4 * (2 ** octave)
        field = _smooth_field(rng, (w, h), (n + int(rng.integers(0, 3)), n), 1)
        field -= f32(0.5)
        field *= amp
        tex += field
        amp *= f32(0.55)
    base *= tex
    np.clip(base, f32(0.0), f32(1.0), out=base)
    base *= f32(255.0)
    img = Image.fromarray(base.astype(np.uint8), "RGB").convert("RGBA")

    # Shapes: overlapping, partly translucent ellipses, rectangles, polygons and lines.
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    scale = min(w, h)
    for _ in range(int(rng.integers(14, 26))):
        kind = int(rng.integers(0, 4))
        cx, cy = float(rng.uniform(-0.1, 1.1) * w), float(rng.uniform(-0.1, 1.1) * h)
        r = float(rng.uniform(0.04, 0.3) * scale)
        color = _random_color(rng, int(rng.integers(120, 256)))
        if kind == 0:
            rx, ry = r, r * float(rng.uniform(0.4, 1.6))
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=color)
        elif kind == 1:
            draw.rectangle([cx - r, cy - r * 0.7, cx + r * float(rng.uniform(0.3, 1.5)), cy + r], fill=color)
        elif kind == 2:
            k = int(rng.integers(3, 7))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = r * rng.uniform(0.5, 1.2, k)
            pts = [(cx + float(rr * np.cos(a)), cy + float(rr * np.sin(a))) for a, rr in zip(ang, rad)]
            draw.polygon(pts, fill=color)
        else:
            x2, y2 = float(rng.uniform(0, w)), float(rng.uniform(0, h))
            draw.line([cx, cy, x2, y2], fill=color, width=max(1, int(rng.uniform(0.005, 0.03) * scale)))
    # Soften edges a little, as optics do (a box blur is much cheaper than a Gaussian here).
    layer = layer.filter(ImageFilter.BoxBlur(max(1, scale // 700)))
    img = Image.alpha_composite(img, layer).convert("RGB")

    # Stripes in one random region (fabric, blinds) and fine sensor-like noise over everything.
    arr = np.asarray(img, dtype=f32)
    x0, y0 = int(rng.integers(0, max(1, w // 2))), int(rng.integers(0, max(1, h // 2)))
    x1 = min(w, x0 + int(rng.integers(max(1, w // 6), max(2, w // 2))))
    y1 = min(h, y0 + int(rng.integers(max(1, h // 6), max(2, h // 2))))
    period = float(rng.uniform(0.01, 0.04) * scale) + 2.0
    theta = float(rng.uniform(0, np.pi))
    phase = (ys[y0:y1] * f32(np.sin(theta)))[:, None] + (xs[x0:x1] * f32(np.cos(theta)))[None, :]
    arr[y0:y1, x0:x1] += (f32(40.0) * np.sin(phase * f32(2 * np.pi / period)))[:, :, None]
    # Triangular noise from random bytes (sum of two nibbles, sigma ~3.9): 5x cheaper than normal.
    raw = np.frombuffer(rng.bytes(arr.size), dtype=np.uint8).reshape(arr.shape)
    noise = (raw & 15).astype(f32)
    noise += raw >> 4
    noise -= f32(15.0)
    noise *= f32(0.6)
    arr += noise
    np.clip(arr, f32(0.0), f32(255.0), out=arr)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def encode(img: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    """``img`` encoded as ``fmt`` (JPEG, PNG, GIF, WEBP, BMP...); ``quality`` applies to JPEG/WEBP."""
    fmt = fmt.upper()
    if fmt == "JPG":
        fmt = "JPEG"
    out = io.BytesIO()
    if fmt in ("JPEG", "WEBP"):
        src = img if img.mode in ("RGB", "L") else img.convert("RGB")
        src.save(out, format=fmt, quality=int(quality))
    else:
        src = img.convert("RGB") if fmt in ("BMP",) and img.mode not in ("RGB", "L", "P", "1") else img
        src.save(out, format=fmt)
    return out.getvalue()


def _decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def _crop5(img: Image.Image) -> Image.Image:
    # 5% of each dimension removed in total: 2.5% from every edge, re-centred on the same scene.
    w, h = img.size
    dx, dy = int(round(w * 0.025)), int(round(h * 0.025))
    return img.crop((dx, dy, w - dx, h - dy))


TRANSFORMS = {
    "jpeg50": lambda img: _decode(encode(img, "JPEG", 50)),
    "half": lambda img: img.resize((max(1, img.size[0] // 2), max(1, img.size[1] // 2)), _LANCZOS),
    "flip": lambda img: img.transpose(_FLIP_LR),
    "png": lambda img: _decode(encode(img, "PNG")),
    "crop5": _crop5,
    "rotate90": lambda img: img.transpose(_ROT90),
}


def transform(img: Image.Image, kind: str) -> Image.Image:
    """A common benign edit of ``img``: one of ``TRANSFORMS`` (jpeg50, half, flip, png, crop5, rotate90).

    jpeg50 and png are round trips returned decoded; crop5 removes 2.5% from every edge; rotate90 turns
    counter-clockwise.
    """
    try:
        fn = TRANSFORMS[kind]
    except KeyError:
        raise ValueError("unknown transform %r (choose from %s)" % (kind, ", ".join(sorted(TRANSFORMS)))) from None
    return fn(img)


# Photographs and scans bundled inside the scikit-image wheel (skimage/data), by the name of the
# skimage.data function that returns them. Files are read directly so nothing can trigger a download.
_SKIMAGE_FILES = (
    ("astronaut", "astronaut.png"),
    ("brick", "brick.png"),
    ("camera", "camera.png"),
    ("cell", "cell.png"),
    ("chelsea", "chelsea.png"),
    ("clock", "clock_motion.png"),
    ("coffee", "coffee.png"),
    ("coins", "coins.png"),
    ("colorwheel", "color.png"),
    ("grass", "grass.png"),
    ("gravel", "gravel.png"),
    ("horse", "horse.png"),
    ("hubble_deep_field", "hubble_deep_field.jpg"),
    ("immunohistochemistry", "ihc.png"),
    ("logo", "logo.png"),
    ("microaneurysms", "microaneurysms.png"),
    ("moon", "moon.png"),
    ("motorcycle", "motorcycle_left.png"),
    ("page", "page.png"),
    ("retina", "retina.jpg"),
    ("rocket", "rocket.jpg"),
    ("shepp_logan_phantom", "phantom.png"),
    ("text", "text.png"),
)


def sample_images() -> List[Tuple[str, Image.Image]]:
    """The sample images scikit-image ships in its wheel, as (name, RGB image); never downloads."""
    import skimage.data  # test dependency only: imported here, not at module load

    folder = os.path.dirname(os.path.abspath(skimage.data.__file__))
    found = []
    for name, filename in _SKIMAGE_FILES:
        path = os.path.join(folder, filename)
        if not os.path.isfile(path):
            continue  # this scikit-image version fetches it from the network: skip it
        with Image.open(path) as im:
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                # Flatten transparency onto white, as a browser shows it.
                rgba = im.convert("RGBA")
                bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                rgb = Image.alpha_composite(bg, rgba).convert("RGB")
            else:
                rgb = im.convert("RGB")
        found.append((name, rgb))
    return found


def tiny_png() -> bytes:
    """A small built-in benign PNG (no scikit-image needed): for the console self-test."""
    return base64.b64decode(_TINY_PNG)


# generate_image(7, (64, 48)).quantize(16), saved as optimised PNG; frozen so its hashes never drift.
_TINY_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAEAAAAAwBAMAAABTZWEsAAAAMFBMVEXC5dTMxK+D7Nl4xp+4ppGRopljqoRel3mahJKPaKln"
    "hXlra3yKS52lLLpoU5RpO3fhE2wcAAADf0lEQVR42k2UPW8dRRSGn/kw0CTe9XXkBuTNNe5SjL2JqCKNxRX1AkpPQ5+fQEEB"
    "HT8AiR8QELeGa3mF0sH6jnC64JuNoEHBmnHSAN7Zodi9JtPNOe+cd857PsTnNcy646XaDcDOJ5TkACCLFSBrYFFDEAB/AmLw"
    "p4JpAD3cFIUH2GF90qsGKFqJnlliQwZAB2wCECIFLJHWTkFBAqCvEQIgGWiBIDWrGsrbDgBvR2RwI5OEBQxogK82pi8Drx05"
    "LQDY7UfDFbvpNb+SYssCsZ2uTXMKD2p4p4zMePcIENka0D9r8eFGBgUYZBJbeza6dDq4H8JSQApnJS0lUQYvpINQtVnbt+Zh"
    "FU3KgUhZlsTncjX3T4PjVit64JQ54AEaGprnSU6rbC8b1BZDtg4gg4ZzELqh3BJAW/1Au7FO1kV12O+dR2p54o/Dx5YQUvgo"
    "q6hqYtMQiacyvdpbdNKAiDp1IB7sV9j6AdAAseeONEggYUigu8tNkWj2R5rplWr2kUQHJxbRcWObnbfv6TgCvuPRqkEjnvO9"
    "uw8n6dfbKO53FC3dQvPGbvdYFJqL7mkkZZdBL242BiB1NfNtW1HzIzp/EU8iIggy7Evr3gMXodIbKRRtJmQKNA6dJYH6582o"
    "HQ37ptdUrrlciVyOxRdk6waGrJC9WHQeg9HPHCA6cowdRCzxG3BO6YwSTl4MrQdKY8o7i5iAeGsCTURsIh2AEkEZq5TV1P03"
    "Hm5kZmSWa1q0MtRqZo+vvuVMocoh8ADodIiW2WyGYZN0HM1BjgH8dYQUagPMVCHoU0CZXCnAy/cBIvCLA7BbBprkAI7yPM/l"
    "h+vk7wKgcbQ4cjVsgaBnX/D3Z8Bk0KmDFQj8WNNMz+EtuIcy3TAW5jcJMTpUJGTrTzoOMDV0SCfB4CAakl+us9CHE22BWlTD"
    "0IUUFO31hjm4uZracZwnE5Inu3iS0VOsIzzYoAYep6CGHRYwybNaXe+oKm5D14mEcaRAw92LMzNSfJnl8KTT9rojaAhpGZoB"
    "4Peyktx2dd3hh9GLJGLAg4T0ky4heW27tew4ghr/DH/9+7WDF498ADKUwV8M49uvxnKno+xqzqPfLVwSHSg8cQn0ax3CHPj5"
    "HUg4yFMCnyGLFgnbH3zKFQB/MJboYFACWSBBiGrs/aV1LYoAR2O2LRKYIObVYDgsiCTv/l+U/wHz5Iqnsi8EhQAAAABJRU5E"
    "rkJggg=="
)
