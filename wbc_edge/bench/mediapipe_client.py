"""`wbc-edge bench --client mediapipe`: the .tflite files as an app developer runs them, through MediaPipe
Tasks `ImageClassifier`, compared with `wbc_edge.runtime` on the same images.

What MediaPipe does differently is only the resize.  It gets the decoded RGB image exactly as
`wbc_edge.core.preprocess.load_image` gives it (EXIF orientation, alpha over white, 16 -> 8 bit: our decoding, not
its own) and then:
- resizes the whole image to the input size itself: an OpenCV bilinear warp of the full-image region, corners
  mapped to corners, **no antialiasing** (`wbc_edge.core.preprocess` uses Pillow's bilinear resize, which
  antialiases when shrinking);
- normalises with the model's NormalizationOptions (mean 0, std 1: nothing changes) for float inputs, and
  feeds uint8 models the pixels as they are;
- reads labels.txt from the model's metadata and returns categories sorted by score.

Measured per variant: does MediaPipe load it, does it name the classes, top-1-by-name accuracy and agreement
with the runtime, |Δp| against the runtime; the same with our own preprocessed pixels handed to MediaPipe
(its resize is then an identity, so any difference left is not the resize); and, when OpenCV is installed
(it comes with mediapipe), the pixel difference between its resize and ours, from an emulation of its resize
whose fidelity is reported (runtime on the emulated pixels vs MediaPipe's own probabilities).

MediaPipe and OpenCV are imported only here, only when asked for; the rest of bench stays MediaPipe-free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..core.errors import BadImageError, WbcEdgeError, first_line

__all__ = ["import_mediapipe", "mediapipe_like_resize", "run_mediapipe_client", "markdown_section",
           "PREPROCESSING_NOTE", "INSTALL_HINT"]

PREPROCESSING_NOTE = (
    "MediaPipe ImageClassifier gets the decoded RGB image (wbc_edge.core.preprocess.load_image: same decoding, EXIF, "
    "alpha and bit depth handling as preprocess) and resizes it itself: an OpenCV bilinear warp of the whole "
    "image, corners mapped to corners, without antialiasing; wbc_edge.core.preprocess resizes with Pillow bilinear, "
    "which antialiases when shrinking. Normalisation: NormalizationOptions mean 0 / std 1, i.e. raw pixels, "
    "as the model expects. 'pre-resized' hands MediaPipe our preprocessed pixels instead (its resize is then "
    "an identity): whatever differs there is not the resize. Probabilities are compared with the runtime's raw "
    "outputs: a calibration temperature in the contract is applied by the runtime only (same ranking).")
INSTALL_HINT = ("--client mediapipe needs MediaPipe (mediapipe==1.2.2), which cannot share a venv with the "
                "[train] extra (absl-py pins clash): python3 -m venv .venv-mp && .venv-mp/bin/pip install -e "
                "'.[mediapipe]' and run bench from there")


def import_mediapipe():
    """(mediapipe module, BaseOptions, vision) or a one-line WbcEdgeError saying how to install it."""
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError as exc:
        raise WbcEdgeError(f"{INSTALL_HINT} ({first_line(exc)})") from None
    return mp, BaseOptions, vision


def _cv2():
    try:
        import cv2

        return cv2
    except ImportError:
        return None


def mediapipe_like_resize(rgb: np.ndarray, size: int, cv2=None) -> np.ndarray | None:
    """An emulation of MediaPipe's own resize (OpenCV bilinear warp, corners to corners, no antialiasing);
    None without OpenCV.  Used only to measure the pixel difference; its fidelity is reported."""
    cv2 = cv2 or _cv2()
    if cv2 is None:
        return None
    h, w = rgb.shape[:2]
    m = np.array([[size / w, 0.0, 0.0], [0.0, size / h, 0.0]], dtype=np.float64)
    return cv2.warpAffine(np.ascontiguousarray(rgb), m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


class _MPClassifier:
    def __init__(self, path: Path, mp, base_options, vision):
        self.mp = mp
        opts = vision.ImageClassifierOptions(base_options=base_options(model_asset_path=str(path)),
                                             max_results=-1)
        self.clf = vision.ImageClassifier.create_from_options(opts)

    def classify(self, rgb: np.ndarray, model_labels: Sequence[str],
                 labels: Sequence[str]) -> tuple[np.ndarray, str | None, bool]:
        """-> (probabilities in `labels` order, top category name or None, whether every category had a name).

        Scores are mapped by name; without names, by index through the model's own labels."""
        image = self.mp.Image(image_format=self.mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        cats = self.clf.classify(image).classifications[0].categories
        probs = np.zeros(len(labels), dtype=np.float32)
        lower = {c.strip().lower(): i for i, c in enumerate(labels)}
        named = all(c.category_name for c in cats)
        for c in cats:
            name = c.category_name or (model_labels[c.index] if 0 <= c.index < len(model_labels) else None)
            if name is not None and name.strip().lower() in lower:
                probs[lower[name.strip().lower()]] = c.score
        return probs, (cats[0].category_name if cats else None), named

    def close(self) -> None:
        self.clf.close()


def run_mediapipe_client(models: Sequence, paths: Sequence[str], y: np.ndarray, rels: Sequence[str],
                         pixels: dict[int, np.ndarray], *, labels: Sequence[str],
                         advance: Callable[[int], None] | None = None) -> dict:
    """The `clients.mediapipe` part of a bench result.

    models: `wbc_edge.bench.models.BenchModel`s (tflite ones are used: .name, .path, .labels, .input_size,
    .probs = the runtime's probabilities in `labels` order); paths / y (class indices into `labels`) / rels:
    the images; pixels: {input size: preprocessed uint8 (N, S, S, 3)} as the runtime saw them.
    """
    mp, base_options, vision = import_mediapipe()
    from ..core.preprocess import load_image

    cv2 = _cv2()
    advance = advance or (lambda n: None)
    tfl = [m for m in models if m.kind == "tflite"]
    sizes = sorted({int(m.input_size) for m in tfl})
    n = len(paths)
    images: list[np.ndarray | None] = []
    for p in paths:
        try:
            images.append(np.asarray(load_image(p)))
        except BadImageError:  # already counted as skipped by bench; keep indices aligned
            images.append(None)
    emulated: dict[int, list[np.ndarray | None]] = {}
    pixel_stats: dict[str, dict] = {}
    if cv2 is not None:
        for s in sizes:
            emulated[s] = [None if im is None else mediapipe_like_resize(im, s, cv2) for im in images]
            diffs = [np.abs(e.astype(np.int16) - pixels[s][i].astype(np.int16))
                     for i, e in enumerate(emulated[s]) if e is not None]
            d = np.concatenate([x.ravel() for x in diffs]) if diffs else np.zeros(1, np.int16)
            pixel_stats[str(s)] = {"mean_abs": float(d.mean()), "p99_abs": float(np.percentile(d, 99)),
                                   "max_abs": int(d.max()), "share_differing": float(np.mean(d > 0)),
                                   "n_images": len(diffs)}
    labels = list(labels)
    truth = [labels[int(c)] for c in y]
    variants = []
    for m in tfl:
        rec: dict = {"name": m.name, "path": str(m.path), "loaded": False, "error": None}
        variants.append(rec)
        try:
            clf = _MPClassifier(m.path, mp, base_options, vision)
        except Exception as exc:  # noqa: BLE001 - MediaPipe raises RuntimeError/ValueError with its reason
            rec["error"] = first_line(exc)
            advance(n)
            continue
        rec["loaded"] = True
        s = int(m.input_size)
        model_labels = list(m.labels or labels)
        rt_top = [labels[int(i)] for i in m.probs.argmax(1)]
        full, pre = [], []
        tops, pre_tops, all_named = [], [], True
        try:
            for i in range(n):
                if images[i] is None:
                    advance(1)
                    continue
                probs, top, named = clf.classify(images[i], model_labels, labels)
                all_named &= named
                p2, top2, _ = clf.classify(pixels[s][i], model_labels, labels)
                full.append((i, probs))
                tops.append((i, top))
                pre.append((i, p2))
                pre_tops.append((i, top2))
                advance(1)
        finally:
            clf.close()
        idx = np.array([i for i, _ in full], dtype=np.int64)
        mp_probs = np.stack([p for _, p in full]) if full else np.zeros((0, len(labels)))
        pre_probs = np.stack([p for _, p in pre]) if pre else np.zeros((0, len(labels)))
        rt = m.probs[idx]
        names = [t for _, t in tops]
        k = max(1, len(idx))
        rec.update({
            "n": int(len(idx)),
            "named": bool(all_named),
            "accuracy": sum(nm == truth[i] for (i, nm) in tops) / k,
            "agreement_pct": 100.0 * sum(nm == rt_top[i] for (i, nm) in tops) / k,
            "mean_abs_dprob": float(np.abs(mp_probs - rt).mean()) if len(idx) else None,
            "max_abs_dprob": float(np.abs(mp_probs - rt).max()) if len(idx) else None,
            "pre_resized": {"agreement_pct": 100.0 * sum(nm == rt_top[i] for (i, nm) in pre_tops) / k,
                            "max_abs_dprob": float(np.abs(pre_probs - rt).max()) if len(idx) else None},
            "disagreements": [{"path": rels[i], "true": truth[i], "runtime": rt_top[i], "mediapipe": nm}
                              for (i, nm) in tops if nm != rt_top[i]][:50],
            "missing_names": sum(nm is None for nm in names),
        })
        rec["emulation_max_abs_dprob"] = None
        if cv2 is not None and emulated.get(s) is not None and len(idx):
            rec["emulation_max_abs_dprob"] = _emulation_fidelity(m, [emulated[s][i] for i in idx], mp_probs,
                                                                 labels)
    return {"client": "mediapipe", "version": _mp_version(mp), "preprocessing": PREPROCESSING_NOTE,
            "resize_pixel_difference": pixel_stats or None,
            "resize_pixel_difference_note": (
                "|MediaPipe-like resize - wbc_edge.core.preprocess| in grey levels (0..255) over all pixels and "
                "channels, from the OpenCV emulation; emulation_max_abs_dprob per variant = max |runtime on "
                "the emulated pixels - MediaPipe| (how faithful the emulation is)") if pixel_stats else
            "OpenCV not installed: resize pixel difference not measured",
            "variants": variants}


def _emulation_fidelity(m, emulated: list[np.ndarray], mp_probs: np.ndarray, labels: Sequence[str]) -> float:
    from ..runtime import Classifier

    clf = Classifier(m.path, num_threads=1)
    order = clf.output_order(labels)
    out = clf.predict_pixels(np.stack(emulated))[:, order]
    return float(np.abs(out - mp_probs).max())


def _mp_version(mp) -> str:
    from ..runtime.backend import dist_version

    return dist_version("mediapipe", mp)


def markdown_section(client: dict) -> list[str]:
    """Markdown lines for a bench result's `clients.mediapipe`."""
    lines = [f"## Client: MediaPipe Tasks ImageClassifier (mediapipe {client.get('version')})", ""]
    body = []
    for v in client.get("variants", []):
        if not v.get("loaded"):
            body.append([v["name"], "**refused**: " + str(v.get("error")), "-", "-", "-", "-", "-", "-"])
            continue
        pr = v.get("pre_resized") or {}
        emu = v.get("emulation_max_abs_dprob")
        body.append([v["name"], "yes" if v.get("named") else f"**no** ({v.get('missing_names')} unnamed)",
                     f"{100 * v['accuracy']:.1f}%", f"{v['agreement_pct']:.1f}%", f"{v['max_abs_dprob']:.2e}",
                     f"{pr.get('agreement_pct', float('nan')):.1f}%", f"{pr.get('max_abs_dprob', float('nan')):.2e}",
                     "-" if emu is None else f"{emu:.2e}"])
    lines += ["| Variant | class names | name accuracy | agreement with runtime | max \\|Δp\\| vs runtime | "
              "pre-resized: agreement | pre-resized: max \\|Δp\\| | resize emulation max \\|Δp\\| |",
              "|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in body]
    lines.append("")
    px = client.get("resize_pixel_difference")
    if px:
        for s, d in px.items():
            lines.append(f"- Resize difference at {s}x{s} (MediaPipe-like vs `preprocess`, {d['n_images']} images): "
                         f"mean |Δpixel| {d['mean_abs']:.2f}, p99 {d['p99_abs']:.0f}, max {d['max_abs']} grey "
                         f"levels; {100 * d['share_differing']:.0f} % of values differ.")
    lines.append(f"- {client.get('preprocessing')}")
    if client.get("resize_pixel_difference_note"):
        lines.append(f"- {client['resize_pixel_difference_note']}")
    dis = [(v["name"], d) for v in client.get("variants", []) for d in v.get("disagreements") or []]
    if dis:
        lines += ["", "Images where MediaPipe's top-1 name differs from the runtime's:", "",
                  "| Variant | Image | True | Runtime | MediaPipe |", "|---|---|---|---|---|"]
        lines += [f"| {n} | {d['path']} | {d['true']} | {d['runtime']} | {d['mediapipe']} |" for n, d in dis[:20]]
    lines.append("")
    return lines
