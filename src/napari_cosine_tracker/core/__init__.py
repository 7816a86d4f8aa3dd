"""Qt-free core: io -> model -> inference -> cluster -> track -> edit -> export.

Nothing under this package may import Qt or napari (a test checks it), so everything the GUI
does can be run from Python, the command line and a cluster.
"""
