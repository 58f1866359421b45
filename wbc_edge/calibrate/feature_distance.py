"""How far images lie from a model's training data, in its own feature space: a domain-shift signal.

Why: off-domain the softmax is confidently wrong - on Tecom the shipped model's abstain threshold accepts 48 %
of the images and 47 % of those are right - so confidence cannot tell a lab that its microscope is not the
one the model learnt.  The pooled features can (measured in benchmarks/robust/README.md, "far from the
training data"): the Mahalanobis distance to the nearest training class (Lee et al. 2018), in a PCA subspace
of the train features with one covariance shared by the classes.  The cut is a high quantile of the *val*
split's distances, so about 5 % of in-domain images count as far by construction, and no foreign image is
used to set it.

This module is the numpy part (fit, distances, the file); `wbc_edge.calibrate.confidence` extracts the features with
the Keras model and stores the fit as RUN_DIR/feature_distance.npz; `wbc-edge crossdomain` reports, per
domain, the share of images beyond the cut.  It is a property of a *set* of images, not a per-image
verdict the runtime applies: the exported .tflite files have no feature output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ..core import atomic
from ..core.errors import ModelFileError

FEATURE_DISTANCE_FILE = "feature_distance.npz"
#: PCA dimensions: 7,199 train images cannot pin down a 1280 x 1280 covariance; 16-128 all separate the labs.
DEFAULT_DIMS = 64
#: The cut: this quantile of the val split's distances (5 % of in-domain images are "far" by construction).
DEFAULT_QUANTILE = 0.95


@dataclass(frozen=True)
class FeatureDistance:
    mean: np.ndarray         # (F,) mean train feature
    basis: np.ndarray        # (F, D) PCA directions of the train features
    class_means: np.ndarray  # (C, D) per-class mean in the subspace
    precision: np.ndarray    # (D, D) inverse of the shared within-class covariance
    cut: float               # distances above this count as far from the training data
    quantile: float          # the val quantile the cut is
    val_median: float        # median val distance: the in-domain scale a ratio is read against

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row of `features` (N, F) to the nearest class mean."""
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != self.mean.shape[0]:
            raise ValueError(f"features of shape {f.shape}, expected (N, {self.mean.shape[0]})")
        d = ((f - self.mean) @ self.basis)[:, None, :] - self.class_means[None]
        return np.einsum("ncd,de,nce->nc", d, self.precision, d).min(1)

    def summary(self, features: np.ndarray) -> dict:
        """The per-domain figures: share beyond the cut, median distance and its ratio to val's."""
        d = self.distances(features)
        return {"far_share": float(np.mean(d > self.cut)), "median": float(np.median(d)),
                "median_ratio": float(np.median(d) / self.val_median), "cut": self.cut, "quantile": self.quantile}

    def save(self, path: str | os.PathLike) -> Path:
        import io

        buf = io.BytesIO()
        np.savez(buf, **{f.name: np.asarray(getattr(self, f.name)) for f in fields(self)})
        atomic.write_bytes(path, buf.getvalue())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureDistance:
        """Read a saved fit (numbers only: never unpickles); a damaged or foreign file is one ModelFileError."""
        try:
            with np.load(path, allow_pickle=False) as z:
                raw = {f.name: z[f.name] for f in fields(cls)}
            fd = cls(**{k: (float(v) if v.ndim == 0 else v.astype(np.float64)) for k, v in raw.items()})
            dims = fd.basis.shape[1]
            ok = (fd.mean.ndim == 1 and fd.basis.shape[0] == fd.mean.shape[0] and fd.class_means.shape[1] == dims
                  and fd.precision.shape == (dims, dims) and fd.val_median > 0
                  and all(np.all(np.isfinite(getattr(fd, f.name))) for f in fields(cls)))
        except (OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
            raise ModelFileError(f"{path}: not a valid feature-distance file ({type(exc).__name__}: {exc})") from None
        if not ok:
            raise ModelFileError(f"{path}: not a valid feature-distance file (inconsistent shapes or values)")
        return fd


def fit_feature_distance(train_features: np.ndarray, y_train: np.ndarray, val_features: np.ndarray, *,
                         dims: int = DEFAULT_DIMS, quantile: float = DEFAULT_QUANTILE) -> FeatureDistance:
    """Fit on a run's train features (class indices `y_train`); the cut is `quantile` of the val distances.
    With few train images the subspace shrinks to what they can estimate (a tiny test run still fits)."""
    f = np.asarray(train_features, dtype=np.float64)
    y = np.asarray(y_train)
    classes = np.unique(y)
    if len(f) != len(y) or len(classes) < 2 or len(f) < len(classes) + 2:
        raise ValueError(f"{len(f)} train features in {len(classes)} class(es): too few to fit a distance")
    if not 0.5 <= quantile < 1.0:
        raise ValueError(f"quantile {quantile} is not in [0.5, 1)")
    dims = int(min(dims, len(f) - len(classes) - 1, f.shape[1]))
    mean = f.mean(0)
    _, _, vt = np.linalg.svd(f - mean, full_matrices=False)
    basis = vt[:dims].T
    z = (f - mean) @ basis
    class_means = np.stack([z[y == c].mean(0) for c in classes])
    resid = z - class_means[np.searchsorted(classes, y)]
    cov = np.atleast_2d(np.cov(resid.T))
    cov += 1e-6 * np.trace(cov) / dims * np.eye(dims)  # a ridge so near-singular directions stay finite
    precision = np.linalg.inv(cov)
    partial = FeatureDistance(mean, basis, class_means, precision, cut=np.inf, quantile=quantile, val_median=1.0)
    d_val = partial.distances(val_features)
    return FeatureDistance(mean, basis, class_means, precision, cut=float(np.quantile(d_val, quantile)),
                           quantile=quantile, val_median=float(max(np.median(d_val), 1e-12)))
