"""napari writers: a tracked Labels layer (with its lineage) to a CTC result folder.

The lineage travels in the Labels layer's ``metadata["lineage"]`` (set by the tracker widget
and the reader). Start and end frames are recomputed from the labels, so cells painted or
deleted in napari are exported consistently; division links are kept where both cells are
still there. Without a stored lineage, divisions come from a Tracks layer saved along with the
labels, or there are none.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_cosine_tracker.core.io import write_ctc_result

from .layers import LINEAGE_KEY, lineage_for_labels, parents_from_graph

__all__ = ["write_labels", "write_labels_and_tracks", "write_result"]


def write_result(path, labels, lineage=None, parents=None) -> list[str]:
    """Write ``labels`` (T, Y, X) as a CTC result folder at ``path``; returns ``[path]``."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"a CTC result needs tracked labels (T, Y, X); this layer has shape "
                         f"{labels.shape}")
    lin = lineage_for_labels(labels, lineage, parents)
    out = write_ctc_result(Path(path), labels, lin)
    return [str(out)]


def write_labels(path: str, data, meta: dict) -> list[str]:
    """npe2 single-layer writer for a tracked Labels layer."""
    lineage = (meta.get("metadata") or {}).get(LINEAGE_KEY)
    return write_result(path, data, lineage)


def write_labels_and_tracks(path: str, layer_data: list[tuple]) -> list[str]:
    """npe2 writer for a Labels layer saved together with a Tracks layer (its division graph)."""
    labels = [d for d in layer_data if d[2] == "labels"]
    tracks = [d for d in layer_data if d[2] == "tracks"]
    data, meta, _ = labels[0]
    lineage = (meta.get("metadata") or {}).get(LINEAGE_KEY)
    parents = parents_from_graph(tracks[0][1].get("graph")) if tracks else None
    return write_result(path, data, lineage, parents)
