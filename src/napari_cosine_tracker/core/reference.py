"""Classical reference tracker: Otsu threshold + distance-transform watershed + IoU linking.

Not the method: a floor to measure the learned pipeline against, in the same run, with the
same linking code (:func:`~napari_cosine_tracker.core.track.link_frames`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .io import as_movie
from .pipeline import TrackResult
from .track import TrackParams, link_frames

__all__ = ["segment_classical", "track_classical"]


def segment_classical(frame: np.ndarray, smooth: float = 2.0, min_distance: int = 7, min_size: int = 30) -> np.ndarray:
    """Instances of one frame: Otsu on a smoothed image, then a watershed of the distance map."""
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import watershed

    img = gaussian(np.asarray(frame, np.float32), smooth, preserve_range=True)
    if img.max() == img.min():
        return np.zeros(img.shape, np.int32)
    fg = remove_small_objects(img > threshold_otsu(img), max_size=max(0, min_size - 1))
    dist = ndi.distance_transform_edt(fg)
    peaks = peak_local_max(dist, min_distance=min_distance, labels=ndi.label(fg)[0], exclude_border=False)
    markers = np.zeros(img.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=fg).astype(np.int32)


def track_classical(movie, track_params: TrackParams | None = None, **segment_kwargs) -> TrackResult:
    """Segment every frame with :func:`segment_classical` and link by IoU."""
    movie = as_movie(movie)
    labels, lineage = link_frames((segment_classical(movie[t], **segment_kwargs) for t in range(len(movie))), track_params)
    return TrackResult(labels, lineage)
