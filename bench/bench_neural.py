"""Neural hash benchmark: recall under geometric and other edits against PDQ in the same run, false
matches among unrelated images, LSH band settings, inference time, derotation's cost, model size, RSS.

    python bench/bench_neural.py [--threshold T] [--generated 300] [--update-manifest] [--json]

Held-out set: every sample image scikit-image ships (agent.hashing.samples.sample_images; the model
never saw any of them), split into "photos" and "graphics" (colorwheel, logo, shepp_logan_phantom,
horse silhouette, text, page). Each image is JPEG q90 encoded ("the list entry"); each edit is applied
to the decoded image and JPEG q90 encoded again ("what the device sees"), then both go through the
device path (agent.hashing.neural.neural_hash_bytes; PDQ via agent.hashing.imaging.hash_image, fast
decode, nearest of the 8 dihedral variants, threshold 31 as the lists use). Edits: crop10 / crop20 =
10% / 20% of each side removed in total, centred (5% / 10% per edge); pad20 = a border of 10% of the
side on every edge (20% in total), black; pad20noise the same with a noise border; rot8 = 8 degrees,
canvas grown, black corners; rot8crop the same, canvas kept; rot8white white corners; rot-4 / rot12 =
4 degrees clockwise / 12 degrees, canvas grown, black corners; half_q60 = half size, JPEG q60; jpeg50;
gray (saturation 0); bright (brightness 1.3, contrast 0.8); flip (mirror: not a goal).
Unrelated pairs: all pairs of held-out samples plus generated pictures never trained on (seeds
800000...), originals and edited versions; the 1M-entry false-match estimate uses both the
empirical tail and a normal fit of the unrelated distances.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from agent.hashing import neural, samples  # noqa: E402
from agent.hashing.imaging import hash_image  # noqa: E402
from agent.hashing.pdq import hamming as pdq_hamming  # noqa: E402
from agent.lists.assemble import DEFAULT_NEURAL_LSH  # noqa: E402

GRAPHICS = {"colorwheel", "logo", "shepp_logan_phantom", "horse", "text", "page"}
PDQ_THRESHOLD = 31


def _crop(img, frac):
    w, h = img.size
    dx, dy = int(round(w * frac / 2)), int(round(h * frac / 2))
    return img.crop((dx, dy, w - dx, h - dy))


def _pad(img, frac, noise=False):
    w, h = img.size
    dx, dy = int(round(w * frac / 2)), int(round(h * frac / 2))
    if noise:
        rng = np.random.default_rng(w * 7919 + h)
        canvas = Image.fromarray(rng.integers(0, 256, (h + 2 * dy, w + 2 * dx, 3), dtype=np.uint8), "RGB")
    else:
        canvas = Image.new("RGB", (w + 2 * dx, h + 2 * dy), (0, 0, 0))
    canvas.paste(img, (dx, dy))
    return canvas


def _jpeg(img, q):
    return Image.open(io.BytesIO(samples.encode(img, "JPEG", q))).convert("RGB")


EDITS = {
    "crop10": lambda im: _crop(im, 0.10),
    "crop20": lambda im: _crop(im, 0.20),
    "pad20": lambda im: _pad(im, 0.20),
    "pad20noise": lambda im: _pad(im, 0.20, noise=True),
    "rot8": lambda im: im.rotate(8, resample=Image.BILINEAR, expand=True),
    "rot8crop": lambda im: im.rotate(8, resample=Image.BILINEAR, expand=False),
    "rot8white": lambda im: im.rotate(8, resample=Image.BILINEAR, expand=True, fillcolor=(255, 255, 255)),
    "rot-4": lambda im: im.rotate(-4, resample=Image.BILINEAR, expand=True),
    "rot12": lambda im: im.rotate(12, resample=Image.BILINEAR, expand=True),
    "half_q60": lambda im: _jpeg(im.resize((im.size[0] // 2, im.size[1] // 2), Image.LANCZOS), 60),
    "jpeg50": lambda im: _jpeg(im, 50),
    "gray": lambda im: ImageEnhance.Color(im).enhance(0.0),
    "bright": lambda im: ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(1.3)).enhance(0.8),
    "flip": lambda im: im.transpose(Image.FLIP_LEFT_RIGHT),
}
GOALS = {"crop10": 0.9, "pad20": 0.9, "rot8": 0.8}


def _bits(code: bytes) -> np.ndarray:
    """bit i of a code (agent.hashing.neural layout) at index i."""
    return np.unpackbits(np.frombuffer(code, np.uint8))[::-1].astype(bool)


def lsh_hit(e, q, m, bands, flip, depth) -> bool:
    """Whether the device's multi-probe band lookup finds entry bits ``e`` from query bits ``q``/margins ``m``."""
    n_bits = len(e)
    for j in range(bands):
        idx = np.arange(j, n_bits, bands)
        weak = idx[np.argsort(m[idx], kind="stable")[:flip]]
        diff = set(idx[q[idx] != e[idx]].tolist())
        # a probe flips a subset of the weak bits: it hits when that subset is exactly the differing bits
        if len(diff) <= depth and diff <= set(weak.tolist()):
            return True
    return False


def lsh_recall(entries, queries, bands, flip, depth):
    """Banded exact-match recall with multi-probe: entries/queries bool [n, bits], margins [n, bits]."""
    n_bits = entries.shape[1]
    hits, probes = [], 0
    for e, (q, m) in zip(entries, queries):
        hit = False
        count = 0
        for j in range(bands):
            idx = np.arange(j, n_bits, bands)
            weak = idx[np.argsort(m[idx])[:flip]]
            for d in range(depth + 1):
                for subset in itertools.combinations(weak, d):
                    count += 1
                    qq = q.copy()
                    qq[list(subset)] ^= True
                    if np.array_equal(qq[idx], e[idx]):
                        hit = True
        hits.append(hit)
        probes = count
    return float(np.mean(hits)), probes


def scan_cost(data: bytes, neural_codes, pdq_hashes, threshold: int) -> dict:
    """Median ms of ``Scanner.scan_bytes(data)`` with a PDQ list, PDQ + neural lists, and a neural list alone
    (the neural list's code and extra queries included; lists of the held-out entries, a throwaway key)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.lists.assemble import assemble, lsh_params
    from agent.lists.trust import TrustStore, key_id
    from agent.lists.verify import verify_bytes
    from agent.matching.scanner import Scanner

    key = Ed25519PrivateKey.generate()
    trust = TrustStore()
    trust.add("bench", key.public_key())
    now = int(time.time())
    lists = {}
    for signal, hashes in (("pdq", pdq_hashes), ("neural", neural_codes)):
        data_ = assemble(source="bench", name=signal, signal=signal, version=1, hashes=list(hashes), sign=key.sign,
                         key_id=key_id(key.public_key()), created=now - 10, expires=now + 3600,
                         lsh=lsh_params(signal, {"threshold": threshold} if signal == "neural" else None))
        lists[signal] = verify_bytes(data_, trust, now=now)
    out = {}
    for name, chosen in (("pdq", ["pdq"]), ("pdq+neural", ["pdq", "neural"]), ("neural", ["neural"])):
        scanner = Scanner([lists[s] for s in chosen])
        scanner.scan_bytes(data)
        times = []
        for _ in range(30):
            t = time.perf_counter()
            scanner.scan_bytes(data)
            times.append((time.perf_counter() - t) * 1e3)
        out[name] = float(np.median(times))
    return out


def rss_with_model(models_dir: str) -> dict:
    """VmRSS/VmHWM (MiB) of a fresh process: after imports, after loading the model, after 20 codes."""
    code = (
        "import sys, os; sys.path.insert(0, %r)\n"
        "def rss():\n"
        "    d = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
        "    return int(d['VmRSS'].split()[0]) / 1024, int(d['VmHWM'].split()[0]) / 1024\n"
        "import numpy, PIL.Image\n"
        "from agent.hashing import neural, samples\n"
        "a = rss()\n"
        "h = neural.NeuralHasher(models_dir=%r)\n"
        "b = rss()\n"
        "img = samples.generate_image(5)\n"
        "for _ in range(20): h.code(img)\n"
        "c = rss()\n"
        "print(a[0], b[0], c[0], c[1])\n" % (os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."), models_dir)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    a, b, c, hwm = (float(x) for x in out[-4:])
    return {"imports_mib": round(a, 1), "model_loaded_mib": round(b, 1), "after_20_codes_mib": round(c, 1),
            "peak_mib": round(hwm, 1), "model_cost_mib": round(c - a, 1)}


def derotation_cost(images):
    """{"originals"|"rot8": (median ms of neural.preprocess with derotation, without)}, same images, same run."""
    out = {}
    for label, imgs in (("originals", [im.convert("RGB") for im in images]),
                        ("rot8", [EDITS["rot8"](im.convert("RGB")) for im in images])):
        ms = {True: [], False: []}
        for im in imgs:
            for _ in range(5):
                for on in (True, False):
                    t = time.perf_counter()
                    neural.preprocess(im, derotate_turns=on)
                    ms[on].append((time.perf_counter() - t) * 1e3)
        out[label] = (float(np.median(ms[True])), float(np.median(ms[False])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threshold", type=int, default=None, help="match radius (default: the manifest's)")
    ap.add_argument("--generated", type=int, default=300, help="generated unrelated pictures")
    ap.add_argument("--update-manifest", action="store_true", help="write the measured robustness into it")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-variants", action="store_true", help="device recall without the extra queries")
    ap.add_argument("--bands", type=int, default=None, help="LSH bands (default: the lists' default)")
    ap.add_argument("--flip-bits", type=int, default=None, help="multi-probe: weakest bits per band")
    ap.add_argument("--depth", type=int, default=None, help="multi-probe: at most this many flipped at once")
    ap.add_argument("--models-dir", default=None, help="folder of the .tflite and .json (default: models/)")
    args = ap.parse_args()
    models_dir = args.models_dir or neural.MODELS_DIR

    hasher = neural.get_hasher(models_dir=models_dir)
    nh = lambda data: neural.neural_hash_bytes(data, models_dir=models_dir)  # noqa: E731
    manifest = hasher.manifest
    threshold = args.threshold if args.threshold is not None else int(manifest.get("threshold", 24))
    lsh = dict(DEFAULT_NEURAL_LSH)
    for k in ("bands", "flip_bits", "depth"):
        if getattr(args, k) is not None:
            lsh[k] = getattr(args, k)
    print("model %s (%s), %d bits, %d bytes, runtime %s, threshold %d" % (
        manifest["name"], manifest["sha256"][:12], hasher.bits, os.path.getsize(hasher.path), hasher.runtime,
        threshold))

    held = samples.sample_images()
    t0 = time.time()
    rows = []  # per image: name, entry code, pdq, per-edit (neural distance, pdq distance, query bits, margins)
    times = []
    for name, img in held:
        data = samples.encode(img, "JPEG", 90)
        t = time.perf_counter()
        nh(data)
        times.append(time.perf_counter() - t)
        # entries and queries through the device's own pipeline (what `lists build` and the scanner run)
        entry = hash_image(data, fast=True, neural=hasher)
        code, entry_pdq = entry.neural, entry.pdq
        base = Image.open(io.BytesIO(data)).convert("RGB")
        per = {}
        for kind, fn in EDITS.items():
            q = samples.encode(fn(base), "JPEG", 90)
            hq = hash_image(q, fast=True, dihedral=True, neural=hasher, neural_variants=not args.no_variants)
            qc, qm = hq.neural, hq.neural_margins
            nd = neural.hamming(code, qc)
            # the scanner looks up the code's and its extra queries' band keys, then confirms the code itself
            found = hq.pdq_quality >= lsh["min_quality"] and any(
                lsh_hit(_bits(code), _bits(c), m, lsh["bands"], lsh["flip_bits"], lsh["depth"])
                for c, m in [(qc, qm)] + list(hq.neural_variants or ()))
            pd = min(pdq_hamming(v.hash, entry_pdq) for v in hq.dihedral)
            per[kind] = (nd, pd, _bits(qc), qm, found)
        rows.append((name, code, entry_pdq, per))
    print("hashed %d held-out images x %d edits in %.1fs" % (len(held), len(EDITS), time.time() - t0))

    # --- recall per edit ---
    sets = {"photos": [r for r in rows if r[0] not in GRAPHICS], "all": rows}
    print("\nheld-out photos: %s" % ", ".join(r[0] for r in sets["photos"]))
    print("held-out graphics: %s" % ", ".join(r[0] for r in rows if r[0] in GRAPHICS))
    recall = {}
    n_queries = 1 if args.no_variants else 1 + len(neural.QUERY_VARIANTS)
    print("\nneural: d <= %d; device = found by the list's band lookup (%d bands, flip %d, depth %d, min quality %d; "
          "%d queries: the code%s) and d <= %d, what the scanner confirms; PDQ: nearest dihedral variant d <= 31; "
          "either = PDQ or device" % (threshold, lsh["bands"], lsh["flip_bits"], lsh["depth"], lsh["min_quality"],
                                      n_queries, "" if n_queries == 1 else " and its extra queries %s" % (
                                          neural.QUERY_VARIANTS,), threshold))
    print("\n| edit | neural photos (d <= %d) | neural device photos | neural device all | PDQ photos | PDQ all "
          "| either photos | neural d median / max (photos) | PDQ d median (photos) |" % threshold)
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind in EDITS:
        res = {}
        for sname, rs in sets.items():
            nd = np.array([r[3][kind][0] for r in rs])
            pd = np.array([r[3][kind][1] for r in rs])
            dev = np.array([r[3][kind][4] and r[3][kind][0] <= threshold for r in rs])
            res[sname] = {"neural": int((nd <= threshold).sum()), "pdq": int((pd <= PDQ_THRESHOLD).sum()),
                          "device": int(dev.sum()), "either": int((dev | (pd <= PDQ_THRESHOLD)).sum()),
                          "n": len(rs), "neural_median": float(np.median(nd)), "neural_max": int(nd.max()),
                          "pdq_median": float(np.median(pd))}
        recall[kind] = res
        p, a = res["photos"], res["all"]
        print("| %s | %d/%d | %d/%d (%.0f%%) | %d/%d | %d/%d (%.0f%%) | %d/%d | %d/%d | %.0f / %d | %.0f |" % (
            kind, p["neural"], p["n"], p["device"], p["n"], 100.0 * p["device"] / p["n"], a["device"], a["n"],
            p["pdq"], p["n"], 100.0 * p["pdq"] / p["n"], a["pdq"], a["n"], p["either"], p["n"],
            p["neural_median"], p["neural_max"], p["pdq_median"]))

    # --- unrelated pairs ---
    gen_codes, gen_edit_codes, gen_edit_own = [], [], []
    for k, s in enumerate(range(800000, 800000 + args.generated)):
        img = samples.generate_image(s, (512, 384))
        data = samples.encode(img, "JPEG", 90)
        gen_codes.append(nh(data))
        if k % 3 == 0:  # an edited version, compared with every generated original but its own
            gen_edit_codes.append(hasher.code(EDITS[("crop20", "pad20", "rot8")[k % 9 // 3]](img)))
            gen_edit_own.append(k)
    held_codes = [r[1] for r in rows]
    all_codes = held_codes + gen_codes
    B = np.array([_bits(c) for c in all_codes])
    d = (B[:, None, :] != B[None, :, :]).sum(2)
    iu = np.triu_indices(len(B), 1)
    unrelated = d[iu]
    # edited held-out images against every other held-out original
    cross = []
    for i, r in enumerate(rows):
        for kind in ("crop20", "pad20", "rot8", "half_q60"):
            qb = r[3][kind][2]
            for j, c in enumerate(held_codes):
                if j != i:
                    cross.append(int((qb != _bits(c)).sum()))
    EB = np.array([_bits(c) for c in gen_edit_codes])
    mask = np.ones((len(EB), len(gen_codes)), bool)
    mask[np.arange(len(EB)), gen_edit_own] = False
    cross_gen = (EB[:, None, :] != B[None, len(held_codes):, :]).sum(2)[mask]
    unrel_all = np.concatenate([unrelated, np.array(cross), cross_gen])
    mu, sd = float(unrel_all.mean()), float(unrel_all.std())
    pz = 0.5 * math.erfc((mu - (threshold + 0.5)) / (sd * math.sqrt(2)))
    held_pairs = d[:len(held_codes), :len(held_codes)][np.triu_indices(len(held_codes), 1)]
    print("\nunrelated pairs: %d (held-out x held-out %d, generated x generated/held-out %d, edited x other %d)" % (
        len(unrel_all), len(held_pairs), len(unrelated) - len(held_pairs), len(cross) + len(cross_gen)))
    pct = np.percentile(unrel_all, [0, 0.1, 1, 5, 50])
    print("distance min %d, p0.1 %.0f, p1 %.0f, p5 %.0f, median %.0f, mean %.1f, sd %.1f; held-out pairs min %d" % (
        pct[0], pct[1], pct[2], pct[3], pct[4], mu, sd, held_pairs.min()))
    hist = np.bincount(unrel_all, minlength=hasher.bits + 1)
    print("histogram (distance: count) up to 48: " + ", ".join("%d:%d" % (k, hist[k]) for k in range(49) if hist[k]))
    false_at_t = int((unrel_all <= threshold).sum())
    # The tail is heavier than a normal fit says (the closest pairs are similar-looking pictures, not
    # chance): also fit log P(d <= t) as a line over the observed lower tail (counts 10 .. 1% of the
    # pairs) and extrapolate it down to the threshold, the more careful estimate.
    cdf = np.cumsum(hist)
    ts = [t for t in range(len(cdf)) if 10 <= cdf[t] <= 0.01 * len(unrel_all)]
    slope, icept = np.polyfit(ts, np.log(cdf[ts] / len(unrel_all)), 1)

    def p_tail(t):
        return float(min(1.0, math.exp(icept + slope * t)))

    n_gen_gen = len(unrelated) - len(held_pairs) - len(held_codes) * len(gen_codes)
    parts = {"held-out x held-out": held_pairs, "generated x generated": d[len(held_codes):, len(held_codes):][
        np.triu_indices(len(gen_codes), 1)], "held-out x generated": d[:len(held_codes), len(held_codes):].ravel(),
             "edited x other": np.concatenate([np.array(cross), cross_gen])}
    assert sum(len(v) for v in parts.values()) == len(unrel_all) and n_gen_gen == len(parts["generated x generated"])
    print("closest unrelated pairs by kind (min, pairs <= %d): %s" % (threshold + 8, "; ".join(
        "%s %d, %d of %d" % (k, v.min(), (v <= threshold + 8).sum(), len(v)) for k, v in parts.items())))
    print("lower-tail fit over d = %d..%d: P(d <= t) = exp(%.2f + %.3f t), x%.2f per bit; P(d <= %d) = %.2e -> "
          "%.2e false matches per image against 1M entries" % (ts[0], ts[-1], icept, slope, math.exp(slope),
                                                              threshold, p_tail(threshold), p_tail(threshold) * 1e6))
    print("false matches at d <= %d: %d of %d pairs (%.2e); normal fit P(d <= %d) = %.2e -> %.2e false matches "
          "per image against a 1,000,000-entry list" % (threshold, false_at_t, len(unrel_all),
                                                       false_at_t / len(unrel_all), threshold, pz, pz * 1e6))
    tail = {}
    for t in (12, 16, 20, 22, 24, 26, 28, 30, 32):
        p_emp = float((unrel_all <= t).mean())
        p_fit = 0.5 * math.erfc((mu - (t + 0.5)) / (sd * math.sqrt(2)))
        tail[t] = (p_emp, p_fit, p_tail(t))
    print("| threshold | empirical P(unrelated <= t) | normal fit | x 1M entries (normal) | tail fit | x 1M entries "
          "(tail) | recall crop10/pad20/rot8/half_q60 (photos, distance) | device recall crop10/crop20/pad20/rot8/"
          "half_q60 (photos) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for t, (pe, pf, pt) in tail.items():
        rr = "/".join("%.2f" % np.mean([r[3][k][0] <= t for r in sets["photos"]])
                      for k in ("crop10", "pad20", "rot8", "half_q60"))
        rr += " | " + "/".join("%.2f" % np.mean([r[3][k][4] and r[3][k][0] <= t for r in sets["photos"]])
                               for k in ("crop10", "crop20", "pad20", "rot8", "half_q60"))
        print("| %d | %.2e | %.2e | %.2e | %.2e | %.2e | %s |" % (t, pe, pf, pf * 1e6, pt, pt * 1e6, rr))

    # --- LSH band settings for the Bloom keys ---
    print("\nLSH (bands interleaved as agent.core.lsh; multi-probe on the weakest bits per band), photos, edits "
          "crop10/crop20/pad20/rot8/half_q60; false candidates per image = probes x 1e6 / 2^(bits/band):")
    entries, queries = [], []
    for r in sets["photos"]:
        for kind in ("crop10", "crop20", "pad20", "rot8", "half_q60"):
            entries.append(_bits(r[1]))
            queries.append((r[3][kind][2], r[3][kind][3]))
    entries = np.array(entries)
    lsh_rows = []
    print("| bands | bits/band | flip | depth | recall | probes/image | false candidates/image at 1M |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for bands, flip, depth in ((4, 0, 0), (4, 8, 2), (4, 12, 2), (4, 16, 3), (6, 8, 2), (8, 0, 0), (8, 6, 2),
                               (8, 8, 3)):
        rec, probes = lsh_recall(entries, queries, bands, flip, depth)
        per_band = hasher.bits // bands
        fc = probes * 1e6 / 2.0 ** per_band
        lsh_rows.append({"bands": bands, "flip": flip, "depth": depth, "recall": rec, "probes": probes,
                         "false_candidates_1M": fc})
        print("| %d | %d | %d | %d | %.3f | %d | %.2e |" % (bands, per_band, flip, depth, rec, probes, fc))
    per_query = sum(math.comb(lsh["flip_bits"], k) for k in range(lsh["depth"] + 1)) * lsh["bands"]
    print("(this table: the code alone. The lists' setting with %d queries per image makes %d probes: %.2e false "
          "candidates per image against 1M random entries)" % (
              n_queries, n_queries * per_query, n_queries * per_query * 1e6 / 2.0 ** (hasher.bits // lsh["bands"])))

    # --- cost ---
    x = neural.preprocess(held[0][1], hasher.size)
    for _ in range(5):
        hasher._run(x)
    t = time.perf_counter()
    for _ in range(200):
        hasher._run(x)
    invoke_ms = (time.perf_counter() - t) / 200 * 1e3
    full_ms = []
    big = samples.encode(samples.generate_image(3), "JPEG", 90)  # 1024x768
    for _ in range(30):
        t = time.perf_counter()
        nh(big)
        full_ms.append((time.perf_counter() - t) * 1e3)
    pdq_ms = []
    for _ in range(30):
        t = time.perf_counter()
        hash_image(big, fast=True)
        pdq_ms.append((time.perf_counter() - t) * 1e3)
    scan_ms = scan_cost(big, [r[1] for r in rows], [r[2] for r in rows], threshold) if args.models_dir is None else {}
    derot_ms = derotation_cost([img for _, img in held])
    rss = rss_with_model(models_dir)
    size = os.path.getsize(hasher.path)
    print("\ninference (one thread): invoke %.2f ms; 1024x768 JPEG bytes -> code %.2f ms median (PDQ hash_image "
          "fast, same bytes, same run: %.2f ms); held-out samples bytes -> code median %.2f ms" % (
              invoke_ms, np.median(full_ms), np.median(pdq_ms), np.median(times) * 1e3))
    print("model %d bytes (%.0f KiB); RSS %s" % (size, size / 1024, rss))
    print("derotation: neural.preprocess with / without it, held-out samples, median of 5 each (ms): %s" % (
        "; ".join("%s %.2f / %.2f (%.2fx)" % (k, a, b, a / b) for k, (a, b) in derot_ms.items())))
    if scan_ms:
        print("Scanner.scan_bytes, same 1024x768 JPEG, median of 30 (ms): %s; with a neural list / PDQ list alone: "
              "%.2fx" % (", ".join("%s %.2f" % kv for kv in scan_ms.items()), scan_ms["pdq+neural"] / scan_ms["pdq"]))

    result = {
        "threshold": threshold, "recall": recall, "unrelated_pairs": int(len(unrel_all)),
        "unrelated_distance": {"min": int(pct[0]), "p1": float(pct[2]), "median": float(pct[4]), "mean": round(mu, 2),
                               "sd": round(sd, 2)},
        "false_matches_at_threshold": false_at_t,
        "false_match_rate_fit": pz, "false_matches_per_image_1M_fit": pz * 1e6,
        "false_match_rate_tail_fit": p_tail(threshold), "false_matches_per_image_1M_tail_fit": p_tail(threshold) * 1e6,
        "lsh": lsh_rows, "invoke_ms": round(invoke_ms, 2), "bytes_to_code_ms_1024x768": round(float(np.median(full_ms)), 2),
        "pdq_ms_1024x768": round(float(np.median(pdq_ms)), 2), "model_bytes": size, "rss": rss, "scan_ms": scan_ms,
        "derotation_ms": derot_ms,
    }
    goals = []
    for kind, goal in GOALS.items():
        p = recall[kind]["photos"]
        goals.append("%s device %.0f%% (goal %.0f%%): %s" % (kind, 100.0 * p["device"] / p["n"], 100 * goal,
                                                             "met" if p["device"] / p["n"] >= goal else "NOT met"))
    hq = recall["half_q60"]["photos"]
    goals.append("half_q60 neural device %d vs PDQ %d: %s" % (hq["device"], hq["pdq"],
                                                             "met" if hq["device"] >= hq["pdq"] else "NOT met"))
    worse = [k for k, v in recall.items() if v["all"]["either"] < v["all"]["pdq"]]
    goals.append("PDQ or neural never worse than PDQ: %s" % ("met" if not worse else "NOT met (%s)" % worse))
    goals.append("unrelated held-out pairs within %d: %d (goal 0)" % (threshold, int((held_pairs <= threshold).sum())))
    print("\ngoals: " + "; ".join(goals))
    if args.update_manifest:
        path = os.path.join(models_dir, manifest["name"] + ".json")
        with open(path, "r", encoding="utf-8") as fh:
            m = json.load(fh)
        m["threshold"] = threshold
        m["robustness"] = {
            "measured_by": "bench/bench_neural.py on the held-out scikit-image samples",
            "held_out_photos": [r[0] for r in sets["photos"]],
            "recall_photos_at_threshold": {k: "%d/%d" % (v["photos"]["neural"], v["photos"]["n"])
                                           for k, v in recall.items()},
            "device_recall_photos": {k: "%d/%d" % (v["photos"]["device"], v["photos"]["n"]) for k, v in recall.items()},
            "device_lsh": {k: lsh[k] for k in ("bands", "flip_bits", "depth", "min_quality")},
            "pdq_recall_photos_d31_same_run": {k: "%d/%d" % (v["photos"]["pdq"], v["photos"]["n"])
                                               for k, v in recall.items()},
            "unrelated_pairs": int(len(unrel_all)),
            "unrelated_distance": result["unrelated_distance"],
            "false_matches_at_threshold": false_at_t,
            "held_out_pairs_within_threshold": int((held_pairs <= threshold).sum()),
            "false_matches_per_image_1M_entries_normal_fit": float("%.3g" % (pz * 1e6)),
            "false_matches_per_image_1M_entries_tail_fit": float("%.3g" % (p_tail(threshold) * 1e6)),
        }
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(m, fh, indent=2)
            fh.write("\n")
        print("updated %s" % path)
    if args.json:
        print(json.dumps(result, default=float))


if __name__ == "__main__":
    main()
