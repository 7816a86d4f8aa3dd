"""Input normalisation and rescaling shared by training and inference.

Both must see frames the same way, so this is the one place that defines it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["normalize_frame", "rescale_image", "rescale_labels", "DEFAULT_PERCENTILES"]

DEFAULT_PERCENTILES = (1.0, 99.8)


def normalize_frame(frame: np.ndarray, percentiles=DEFAULT_PERCENTILES) -> np.ndarray:
    """Map a frame's low/high percentiles to 0/1 (float32).

    Per frame, so a movie can be streamed without a first pass; robust to the dtype and
    offset of the camera (uint8, uint16, float, signed).
    """
    frame = np.asarray(frame, dtype=np.float32)
    # A 4x sub-grid is plenty for two percentiles and 16x cheaper on large frames.
    sample = frame[::4, ::4] if frame.size > 65536 else frame
    lo, hi = np.percentile(sample, percentiles)
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ValueError("frame contains NaN or Inf values; clean the image before tracking")
    scale = hi - lo
    if scale <= 1e-6 * max(1.0, abs(hi)):
        # Constant frame: nothing to see; keep it finite and flat.
        return np.zeros_like(frame)
    return (frame - lo) / scale


def scaled_shape(shape, pixel_scale: float) -> tuple[int, int]:
    return tuple(max(1, int(round(s * pixel_scale))) for s in shape)


def rescale_image(image: np.ndarray, pixel_scale: float) -> np.ndarray:
    """Resample a 2-D float image by ``pixel_scale`` (area averaging when shrinking)."""
    if pixel_scale == 1.0:
        return np.asarray(image, dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    size = scaled_shape(image.shape, pixel_scale)
    mode = "area" if pixel_scale < 1 else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(t, size=size, mode=mode, **kwargs)[0, 0].numpy()


def rescale_labels(labels: np.ndarray, shape) -> np.ndarray:
    """Nearest-neighbour resampling of a label image to ``shape`` (keeps ids exact)."""
    labels = np.asarray(labels)
    if tuple(labels.shape) == tuple(shape):
        return labels
    yy = np.minimum((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0], labels.shape[0] - 1).astype(int)
    xx = np.minimum((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1], labels.shape[1] - 1).astype(int)
    return labels[yy[:, None], xx[None, :]]
