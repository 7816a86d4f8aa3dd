"""napari-cosine-tracker: cell segmentation and tracking with recurrent cosine embeddings.

The Qt-free core lives in :mod:`napari_cosine_tracker.core`; the napari front end in
:mod:`napari_cosine_tracker.plugin`. Importing this package imports neither napari nor Qt.
"""

__version__ = "0.1.0"
