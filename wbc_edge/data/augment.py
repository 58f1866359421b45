"""Train-time augmentation on uint8 pixels (numpy + Pillow), the single implementation every training mode uses.

Why these transforms: a model trained on one analyser (PBC, CellaVision DM96) misreads other labs' crops
mostly because of **cell scale** (PBC cells fill about a third of the crop; other labs crop tightly), then
acquisition (low resolution, soft focus, JPEG) and only then colour (see DOMAIN_SHIFT.md).  So the robust
preset zooms over a wide range first, degrades the image like a cheap camera second, and recolours it in
stain space (HED) and in white balance third - strongly enough that a colour cast stops meaning "eosinophil",
with an occasional grey view so the classes must be told apart by nucleus shape and granule texture.  The
`restain` preset also re-renders half the views with each dye's colour moved on its own, so the colour of the
granules *relative to the nucleus* stops being a shortcut (another lab's Wright, Giemsa or rapid stain).

Order follows the physics: stain (the sample) -> magnification and framing -> optics (blur) -> sensor
(resolution, white balance, exposure, gamma, noise) -> JPEG.  Every draw comes from the `rng` passed in, so a
(seed, view, image) triple always gives the same pixels.  Augmentation is applied to the output of
`preprocess` and only at train time - never in evaluation, calibration of the reference, or the runtime.

`shifted_view` is different on purpose: a fixed, seeded family of *held-out* shifts (tight crops, colour
cross-talk, vignetting, sharpening, strong casts) used only to build the "shifted val" set that model
selection looks at, so that selection rewards robustness without ever seeing a real foreign domain.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image, ImageFilter

from ..core.errors import WbcEdgeError


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of each transform; a probability of 0 (or a range of width 0) switches it off."""

    dihedral: bool = True
    # geometry / scale: zoom > 1 magnifies (the cell fills more of the crop), < 1 shrinks (border padding).
    zoom_p: float = 0.0
    zoom_min: float = 1.0
    zoom_max: float = 1.0
    translate: float = 0.0      # max shift as a fraction of the crop side
    # acquisition
    blur_p: float = 0.0
    blur_sigma: float = 0.0     # Gaussian sigma drawn from [0.3, blur_sigma] px
    lowres_p: float = 0.0
    lowres_min: int = 56        # downsample to this many px (drawn in [lowres_min, lowres_max]) and back
    lowres_max: int = 140
    jpeg_p: float = 0.0
    jpeg_quality_min: int = 30  # quality drawn in [jpeg_quality_min, 90]
    noise_p: float = 0.0
    noise_sigma: float = 0.0    # Gaussian sensor noise, sigma drawn from [1, noise_sigma] grey levels
    # colour
    brightness: float = 0.10    # multiplicative, +-
    contrast: float = 0.10      # around the image mean, +-
    saturation: float = 0.10    # towards/away from grey, +-
    stain: float = 0.05         # independent per-channel gain, +-
    hed_p: float = 0.0
    hed_scale: float = 0.0      # stain-space jitter: each of H, E, D optical densities scaled by 1 +- this
    hed_bias: float = 0.0       # ... and shifted by +- this (optical density units)
    #: re-stain: each dye's colour (its optical-density vector) is moved by Gaussian noise of this size and the
    #: image re-rendered with the moved dyes, so nucleus, cytoplasm and granules change hue *independently*
    #: (another lab's Wright / Giemsa / rapid stain), which a global hue rotation or cast cannot do
    restain_p: float = 0.0
    restain: float = 0.0
    #: random convolution (RandConv, Xu et al. 2021; repeated small kernels as in Pro-RandConv, Choi et al. 2023):
    #: one random 3x3 colour-mixing kernel applied 1-3 times, its output brought back to the image's own channel
    #: means and spreads and mixed in with a weight drawn up to `randconv` - local texture and the colour
    #: relations between neighbouring pixels change while the shapes stay (another camera, optics and stain at once)
    randconv_p: float = 0.0
    randconv: float = 0.0
    hue_p: float = 0.0
    hue: float = 0.0            # hue rotation, +- this fraction of the colour wheel
    gamma: float = 0.0          # gamma drawn log-uniformly in [1/(1+g), 1+g]
    tint_p: float = 0.0
    tint: float = 0.0           # white-balance cast: up to this much blue cut (yellow) or boost (blue)
    grey_p: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> AugmentConfig:
        for name, value in asdict(self).items():
            if name.endswith("_p") and not 0.0 <= value <= 1.0:
                raise WbcEdgeError(f"augmentation: {name} must be a probability in [0, 1], got {value}")
        if not 0 < self.zoom_min <= self.zoom_max:
            raise WbcEdgeError(f"augmentation: need 0 < zoom_min <= zoom_max, got {self.zoom_min}, {self.zoom_max}")
        if not 8 <= self.lowres_min <= self.lowres_max:
            raise WbcEdgeError(f"augmentation: need 8 <= lowres_min <= lowres_max, got "
                               f"{self.lowres_min}, {self.lowres_max}")
        if not 1 <= self.jpeg_quality_min <= 90:
            raise WbcEdgeError(f"augmentation: jpeg_quality_min must be 1..90, got {self.jpeg_quality_min}")
        return self


#: Named recipes.  `basic` is the original recipe (dihedral + mild colour); the others add one family each
#: (the ablation), `robust` is all of them and the training default; `restain` (robust + each dye recoloured on
#: its own) passed its selection rule at full scale but its exported seed lost int8 parity, so it is an option;
#: `randconv` (robust + random local convolutions) is screened like every candidate (benchmarks/robust/README.md).
_COLOUR = dict(brightness=0.25, contrast=0.25, saturation=0.45, stain=0.08, hed_p=0.8, hed_scale=0.25,
               hed_bias=0.04, hue_p=0.6, hue=0.07, gamma=0.4, tint_p=0.6, tint=0.4, grey_p=0.12)
_SCALE = dict(zoom_p=0.85, zoom_min=0.8, zoom_max=2.8, translate=0.08, blur_p=0.4, blur_sigma=2.0,
              lowres_p=0.4, jpeg_p=0.3, noise_p=0.3, noise_sigma=6.0)
PRESETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(dihedral=False, brightness=0.0, contrast=0.0, saturation=0.0, stain=0.0),
    "basic": AugmentConfig(),
    "colour": AugmentConfig(**_COLOUR),
    "scale": AugmentConfig(**_SCALE),
    "robust": AugmentConfig(**_COLOUR, **_SCALE),
    "restain": AugmentConfig(**_COLOUR, **_SCALE, restain_p=0.5, restain=0.2),
    "randconv": AugmentConfig(**_COLOUR, **_SCALE, randconv_p=0.5, randconv=0.7),
}
DEFAULT_PRESET = "robust"


def preset(name: str, **overrides) -> AugmentConfig:
    """A named recipe, optionally with some strengths changed (`preset("robust", zoom_max=2.0)`)."""
    if name not in PRESETS:
        raise WbcEdgeError(f"unknown augmentation preset {name!r} (choose from {', '.join(PRESETS)})")
    try:
        return replace(PRESETS[name], **overrides).validate()
    except TypeError as exc:
        raise WbcEdgeError(f"augmentation: {exc}") from None


def augment(pixels: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """uint8 (H, W, 3) -> augmented uint8 (H, W, 3); deterministic for a given rng state."""
    x = dihedral(pixels, int(rng.integers(8))) if cfg.dihedral else pixels
    f = np.ascontiguousarray(x, dtype=np.float32)
    if cfg.hed_p and rng.random() < cfg.hed_p:
        f = _hed_jitter(f, rng, cfg.hed_scale, cfg.hed_bias)
    if cfg.restain_p and rng.random() < cfg.restain_p:
        f = _restain(f, rng, cfg.restain)
    if cfg.hue_p and rng.random() < cfg.hue_p:
        f = _hue_rotate(f, rng.uniform(-cfg.hue, cfg.hue))
    if cfg.zoom_p and (rng.random() < cfg.zoom_p or cfg.translate):
        zoom = float(np.exp(rng.uniform(np.log(cfg.zoom_min), np.log(cfg.zoom_max)))) \
            if rng.random() < cfg.zoom_p else 1.0
        shift = rng.uniform(-cfg.translate, cfg.translate, size=2) * f.shape[0]
        f = _zoom(f, zoom, shift)
    if cfg.blur_p and rng.random() < cfg.blur_p:
        f = _pil_filter(f, ImageFilter.GaussianBlur(rng.uniform(0.3, max(cfg.blur_sigma, 0.3))))
    if cfg.lowres_p and rng.random() < cfg.lowres_p:
        f = _lowres(f, int(rng.integers(cfg.lowres_min, cfg.lowres_max + 1)), rng)
    if cfg.randconv_p and rng.random() < cfg.randconv_p:
        f = _randconv(f, rng, cfg.randconv)
    if cfg.tint_p and rng.random() < cfg.tint_p:
        f = f * _tint_gains(rng, cfg.tint)
    if cfg.stain:
        f = f * rng.uniform(1 - cfg.stain, 1 + cfg.stain, size=3).astype(np.float32)
    if cfg.brightness:
        f = f * rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    if cfg.contrast:
        mean = f.mean()
        f = (f - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + mean
    if cfg.saturation:
        grey = f.mean(axis=2, keepdims=True)
        f = (f - grey) * rng.uniform(1 - cfg.saturation, 1 + cfg.saturation) + grey
    if cfg.gamma:
        g = float(np.exp(rng.uniform(-np.log1p(cfg.gamma), np.log1p(cfg.gamma))))
        f = 255.0 * (np.clip(f, 0, 255) / 255.0) ** g
    if cfg.grey_p and rng.random() < cfg.grey_p:
        f = np.repeat(f @ np.float32([[0.299], [0.587], [0.114]]), 3, axis=2)
    if cfg.noise_p and rng.random() < cfg.noise_p:
        f = f + np.float32(rng.uniform(1.0, max(cfg.noise_sigma, 1.0))) * rng.standard_normal(f.shape, dtype=np.float32)
    out = _to_uint8(f)
    if cfg.jpeg_p and rng.random() < cfg.jpeg_p:
        out = _jpeg(out, int(rng.integers(cfg.jpeg_quality_min, 91)))
    return out


def dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the 8 dihedral transforms of an (H, W, ...) image: k % 4 quarter turns, mirrored for k >= 4."""
    x = np.rot90(x, k % 4, axes=(0, 1))
    return x[:, ::-1] if k >= 4 else x


def shifted_view(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A held-out domain shift for the "shifted val" set (never used in training).

    Always a tight crop (the cell fills 60-100 % of the frame, the largest real factor), then a random pick
    of shifts that training does not apply in this form: a colour cross-talk matrix (another camera's
    colour response), a strong cast, vignetting, unsharp-mask sharpening, low resolution + blur.
    """
    f = np.ascontiguousarray(pixels, dtype=np.float32)
    f = _zoom(f, float(rng.uniform(1.8, 3.0)), rng.uniform(-0.05, 0.05, size=2) * f.shape[0])
    if rng.random() < 0.7:  # another camera's colour response: a random mixing matrix near identity
        mix = np.eye(3, dtype=np.float32) + rng.uniform(-0.18, 0.18, size=(3, 3)).astype(np.float32)
        f = f @ (mix / mix.sum(axis=0, keepdims=True)).T
    if rng.random() < 0.6:
        f = f * _tint_gains(rng, 0.5)
    if rng.random() < 0.4:  # vignetting: darker corners
        h, w = f.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (0.5 * max(h, w)) ** 2
        f = f * (1.0 - rng.uniform(0.15, 0.35) * r2)[..., None]
    if rng.random() < 0.5:
        f = _lowres(f, int(rng.integers(64, 112)), rng)
        f = _pil_filter(f, ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    elif rng.random() < 0.5:
        f = _pil_filter(f, ImageFilter.UnsharpMask(radius=2, percent=int(rng.integers(80, 200)), threshold=2))
    return _to_uint8(f)


#: Fixed seed of the shifted-val set (the same for every training seed, so selection is comparable).
SHIFTED_VAL_SEED = 20261201


def shifted_val_view(pixels: np.ndarray, i: int) -> np.ndarray:
    """Image `i` of the fixed held-out "shifted val" (model selection, the confidence threshold, the int8 and
    cascade rules): its `shifted_view` under a seed that depends only on its position, never on the training
    seed, so every run is judged on the same images."""
    return shifted_view(pixels, np.random.default_rng([SHIFTED_VAL_SEED, i]))


def shifted_val_pixels(paths: list[str], size: int) -> np.ndarray:
    """The shifted val of image files: uint8 pixels of each through `shifted_val_view`."""
    from ..core.preprocess import preprocess

    return np.stack([shifted_val_view(preprocess(p, size), i) for i, p in enumerate(paths)])


def feature_style_jitter(x: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """Perturb the per-channel "style" statistics of a batch of feature maps (N, H, W, C): on a fraction `p`
    of the samples, each channel's spatial mean and std are redrawn around their own values, with the spread
    of those statistics across the batch (DSU, Li et al. 2022, "Uncertainty modeling for out-of-distribution
    generalization").  Why here too: pixel augmentation only reaches the shifts we can write down; feature
    statistics carry the rest of a lab's look (stain, optics) at the depth where the model is fine-tuned, so
    jittering them asks the top blocks to read shape and texture instead.  Applied to cached activations at
    train time only; float32 in and out, deterministic for a given rng state."""
    if p <= 0 or len(x) < 2:
        return x
    sel = rng.random(len(x)) < p
    if not sel.any():
        return x
    eps = np.float32(1e-6)
    mu = x.mean(axis=(1, 2), keepdims=True)
    sig = np.sqrt(x.var(axis=(1, 2), keepdims=True) + eps)
    s_mu = np.sqrt(mu.var(axis=0, keepdims=True) + eps)
    s_sig = np.sqrt(sig.var(axis=0, keepdims=True) + eps)
    beta = mu + rng.standard_normal(mu.shape, dtype=np.float32) * s_mu
    gamma = sig + rng.standard_normal(sig.shape, dtype=np.float32) * s_sig
    out = x.copy()
    out[sel] = ((x - mu) / sig * gamma + beta)[sel]
    return out


def feature_style_mix(x: np.ndarray, domains: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """MixStyle between labs (Zhou et al. 2021, "Domain generalization with MixStyle") on a batch of feature
    maps (N, H, W, C) with each sample's lab in `domains`: on a fraction `p` of the samples, each channel's
    spatial mean and std become lam * own + (1 - lam) * those of a sample from *another* lab in the batch
    (any other sample when the batch has one lab), lam ~ Beta(0.1, 0.1).  Why between labs: DSU (above) only
    reaches the style spread it sees in the batch; a second lab gives real styles to blend towards, so the top
    blocks see PBC content in LISC-like statistics and the reverse (issue 31).  Deterministic for a rng state."""
    if p <= 0 or len(x) < 2:
        return x
    sel = np.flatnonzero(rng.random(len(x)) < p)
    if not len(sel):
        return x
    eps = np.float32(1e-6)
    mu = x.mean(axis=(1, 2), keepdims=True)
    sig = np.sqrt(x.var(axis=(1, 2), keepdims=True) + eps)
    out = x.copy()
    domains = np.asarray(domains)
    for i in sel:
        other = np.flatnonzero(domains != domains[i])
        if not len(other):
            other = np.delete(np.arange(len(x)), i)
        j = int(rng.choice(other))
        lam = np.float32(rng.beta(0.1, 0.1))
        out[i] = (x[i] - mu[i]) / sig[i] * (lam * sig[i] + (1 - lam) * sig[j]) + lam * mu[i] + (1 - lam) * mu[j]
    return out

# -- building blocks ------------------------------------------------------------------------------------------

# Ruifrok & Johnston stain vectors (haematoxylin, eosin, DAB) as in scikit-image's rgb_from_hed.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float32)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED).astype(np.float32)


def _unmix_hed(f: np.ndarray) -> np.ndarray:
    """RGB (float, 0..255) -> H, E, D optical densities with the standard dye vectors."""
    return -np.log(np.clip(f, 1.0, 255.0) / 255.0) @ _HED_FROM_RGB


def _hed_jitter(f: np.ndarray, rng: np.random.Generator, scale: float, bias: float) -> np.ndarray:
    """Scale and shift each stain's optical density (Tellez et al. 2018 style HED augmentation)."""
    hed = _unmix_hed(f)
    a = rng.uniform(1 - scale, 1 + scale, size=3).astype(np.float32)
    b = rng.uniform(-bias, bias, size=3).astype(np.float32)
    od = np.maximum(hed * a + b, 0.0) @ _RGB_FROM_HED
    return 255.0 * np.exp(-od)


def _restain(f: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Unmix into H, E, D optical densities with the standard dye vectors, re-mix with perturbed ones."""
    hed = np.maximum(_unmix_hed(f), 0.0)
    vec = np.maximum(_RGB_FROM_HED + rng.normal(0.0, sigma, size=(3, 3)).astype(np.float32), 0.02)
    vec *= (np.linalg.norm(_RGB_FROM_HED, axis=1) / np.linalg.norm(vec, axis=1))[:, None]
    return 255.0 * np.exp(-(hed @ vec))


def _randconv(f: np.ndarray, rng: np.random.Generator, max_mix: float) -> np.ndarray:
    """A random 3x3 convolution with 3 -> 3 channels (He-normal weights under a Gaussian window, so the centre
    pixel dominates and shapes survive), applied 1-3 times; each output channel is standardised and given the
    input channel's mean and spread, then mixed in with a weight drawn from [0, max_mix]."""
    win = np.exp(-((np.arange(3) - 1.0) ** 2)[:, None] - ((np.arange(3) - 1.0) ** 2)[None, :]
                 / (2 * rng.uniform(0.5, 1.5) ** 2)).astype(np.float32)
    kernel = rng.normal(0.0, np.sqrt(2.0 / 27.0), size=(3, 3, 3, 3)).astype(np.float32) * win[:, :, None, None]
    x = f / 127.5 - 1.0
    h, w = f.shape[:2]
    for _ in range(int(rng.integers(1, 4))):
        pad = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="reflect")
        x = sum(pad[dy:dy + h, dx:dx + w] @ kernel[dy, dx] for dy in range(3) for dx in range(3))
    mean, std = f.mean(axis=(0, 1)), f.std(axis=(0, 1))
    x = (x - x.mean(axis=(0, 1))) / (x.std(axis=(0, 1)) + 1e-6) * std + mean
    mix = np.float32(rng.uniform(0.0, max_mix))
    return (1.0 - mix) * f + mix * x


_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


def _hue_rotate(f: np.ndarray, turn: float) -> np.ndarray:
    """Rotate hue by `turn` of the wheel: a rotation of the chroma plane in YIQ (one 3x3 matrix, so it costs
    a matrix product instead of an HSV round trip; luma is kept)."""
    c, s = np.cos(2 * np.pi * turn), np.sin(2 * np.pi * turn)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float32)
    return f @ (_YIQ_TO_RGB @ rot @ _RGB_TO_YIQ).T


def _border_colour(f: np.ndarray) -> tuple[float, float, float]:
    edge = np.concatenate([f[0], f[-1], f[:, 0], f[:, -1]])
    return tuple(float(v) for v in np.median(edge, axis=0))


def _zoom(f: np.ndarray, zoom: float, shift: np.ndarray) -> np.ndarray:
    """Magnify by `zoom` about the (shifted) centre; area uncovered by a zoom-out takes the border colour."""
    h, w = f.shape[:2]
    fill = _border_colour(f)
    inv = 1.0 / zoom
    cx, cy = w / 2 + shift[0], h / 2 + shift[1]
    data = (inv, 0.0, cx - inv * w / 2, 0.0, inv, cy - inv * h / 2)
    im = Image.fromarray(_to_uint8(f)).transform((w, h), Image.Transform.AFFINE, data,
                                                 resample=Image.Resampling.BILINEAR,
                                                 fillcolor=tuple(int(round(v)) for v in fill))
    return np.asarray(im, dtype=np.float32)


def _pil_filter(f: np.ndarray, flt) -> np.ndarray:
    return np.asarray(Image.fromarray(_to_uint8(f)).filter(flt), dtype=np.float32)


def _lowres(f: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    h, w = f.shape[:2]
    if side >= min(h, w):
        return f
    im = Image.fromarray(_to_uint8(f)).resize((side, side), Image.Resampling.BOX)
    up = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.NEAREST)[int(rng.integers(3))]
    return np.asarray(im.resize((w, h), up), dtype=np.float32)


def _tint_gains(rng: np.random.Generator, strength: float) -> np.ndarray:
    """A white-balance cast: warm (yellow background, blue cut) or cool (blue/purple), with a green-magenta
    component, as seen between microscope lamps and cameras."""
    t = rng.uniform(-1.0, 1.0)
    m = rng.uniform(-0.5, 0.5)
    if t > 0:   # warm: up to `strength` less blue
        gains = [1.0 + 0.1 * t * strength, 1.0 + 0.05 * t * strength, 1.0 - t * strength]
    else:       # cool: more blue, less red
        gains = [1.0 + 0.5 * t * strength, 1.0 + 0.1 * t * strength, 1.0 - 0.5 * t * strength]
    gains = np.array(gains, dtype=np.float32) * np.array([1 + 0.1 * m, 1 - 0.1 * m, 1 + 0.1 * m], np.float32)
    return gains / gains.max() * rng.uniform(0.95, 1.1)


def _jpeg(px: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def _to_uint8(f: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(np.rint(f), 0, 255).astype(np.uint8))
