"""The core must stay importable without a display: no Qt, no napari, not even indirectly."""

import json
import subprocess
import sys

_CHECK = r"""
import importlib, json, pkgutil, sys
import napari_cosine_tracker.core as core
names = ["napari_cosine_tracker", "napari_cosine_tracker.core"]
for info in pkgutil.walk_packages(core.__path__, core.__name__ + "."):
    names.append(info.name)
for name in names:
    importlib.import_module(name)
bad = sorted(m for m in sys.modules
             if m.split(".")[0] in ("qtpy", "napari", "superqt", "magicgui", "vispy")
             or m.startswith(("PyQt", "PySide")))
print(json.dumps({"modules": names, "bad": bad}))
"""


def test_core_imports_without_qt_or_napari():
    # A fresh interpreter: pytest itself (pytest-qt, napari's plugin) has already loaded Qt.
    proc = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "napari_cosine_tracker.core.io" in out["modules"]
    assert "napari_cosine_tracker.core.cli" in out["modules"]
    assert out["bad"] == [], f"core imports GUI modules: {out['bad'][:10]}"
