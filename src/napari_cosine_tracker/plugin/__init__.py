"""napari front end: reader, writer, sample data and the tracker widget (see napari.yaml).

Everything here only converts between napari layers and the Qt-free core, and keeps heavy work
off the GUI thread; the method itself lives in :mod:`napari_cosine_tracker.core`.
"""
