"""What the tracker widget's sections share: settings names, the model picker's choices,
the layout helpers, and the background warm-up that makes the first run fluid."""

from __future__ import annotations

import threading

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QGroupBox, QLabel, QVBoxLayout, QWidget

from napari_cosine_tracker.core.workflow import StepError
from napari_cosine_tracker.core.zoo import DEFAULT_MODEL

SETTINGS_ORG = "napari-cosine-tracker"
SETTINGS_APP = "tracker-widget"

DEVICES = {"Automatic": "auto", "CPU": "cpu", "CUDA (NVIDIA GPU)": "cuda", "MPS (Apple GPU)": "mps"}
#: the packaged model that runs when no movie tells which (a name of the zoo)
MODEL_SHIPPED = DEFAULT_MODEL
MODEL_FOLDER = "Model folder"
#: the picker's default: the packaged model that suits the movie (core.zoo.choose_model)
MODEL_AUTO = "Automatic (by the movie)"
#: seconds between updates of napari's progress bar (each costs tens of ms on the GUI thread)
PROGRESS_INTERVAL_S = 0.5

#: A background step failed (the message names the step and the cause); see core.workflow.
TrackingError = StepError


_warm = threading.Event()
warm_done = threading.Event()  # set when the warm-up below has finished (tests wait on it)


def warm_up():
    """Import the pipeline and cluster a tiny pair once, in the background.

    The first clustering of a process compiles HDBSCAN's numba code (tens of seconds on a busy
    laptop); doing it while the user picks a movie keeps the first frames of a run fluid.
    """
    if _warm.is_set():
        return
    _warm.set()

    def work():
        try:
            pipeline_module()
            from napari_cosine_tracker.core.cluster import cluster_pair, synthetic_embeddings

            yy, xx = np.mgrid[:48, :48]
            lab = ((yy - 24) ** 2 + (xx - 16) ** 2 < 80).astype(np.int32)
            lab[(yy - 24) ** 2 + (xx - 34) ** 2 < 80] = 2
            emb = synthetic_embeddings(lab, dim=4)
            cluster_pair(emb, emb)
            # Start the child process that builds HDBSCAN trees during runs (see treeproc).
            from napari_cosine_tracker.core.cluster import PairClustering
            from napari_cosine_tracker.core.treeproc import shared_tree_process

            PairClustering(emb, emb, tree_process=shared_tree_process()).run()
            # napari's first Labels layer of a process costs ~1 s (class set-up, the
            # colormap's numba code); pay it here rather than when Run is pressed.
            from ..napari_private import warm_up_labels_rendering

            warm_up_labels_rendering()
        except Exception:  # only an optimisation; real errors show up in the run
            pass
        finally:
            warm_done.set()

    threading.Thread(target=work, name="cosine-tracker-warm-up", daemon=True).start()


def pipeline_module():
    # Imported on first use: keeps opening the widget fast (torch loads with it).
    from napari_cosine_tracker.core import pipeline

    return pipeline


def group_box(title: str, *widgets) -> QGroupBox:
    box = QGroupBox(title)
    lay = QVBoxLayout(box)
    lay.setContentsMargins(6, 6, 6, 6)
    for w in widgets:
        if isinstance(w, QWidget):
            lay.addWidget(w)
        elif hasattr(w, "native"):
            lay.addWidget(w.native)
        else:
            lay.addLayout(w)
    return box


def note(text: str = "") -> QLabel:
    lab = QLabel(text)
    lab.setWordWrap(True)
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return lab
