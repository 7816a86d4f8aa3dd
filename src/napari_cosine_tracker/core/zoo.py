"""The models shipped in the package, by name.

Each model is a folder under ``napari_cosine_tracker/models/``: ``weights.safetensors`` and
``config.json``, whose ``zoo`` section gives the name users type (``track --model NAME``, the
widget's picker), one line on what the model is for, and the light microscopy it suits. The
first model of :data:`DEFAULT_MODEL` is what runs when no model is named: the one a
fluorescent-nuclei movie needs.

Anywhere a model is asked for, a name from this zoo, ``"shipped"`` (the default model, the
name older scripts use) or a model folder of one's own may be given; :func:`resolve_model`
turns any of them into a folder. Nothing here imports torch, so listing the models is quick.

``auto`` (the default of ``track``, ``batch`` and the widget) looks at the movie and picks
the label-free model for transmitted-light movies (:func:`choose_model`).

Public API: :data:`DEFAULT_MODEL`, :data:`AUTO`, :class:`ZooModel`, :func:`list_models`,
:func:`choose_model`, :func:`resolve_model`, :func:`models_dir`, :class:`ModelError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AUTO", "DEFAULT_MODEL", "ModelError", "ZooModel", "choose_model", "list_models",
           "models_dir", "resolve_model"]

DEFAULT_MODEL = "fluorescence"
SHIPPED = "shipped"  # older name of the default model, still accepted
AUTO = "auto"  # pick by the movie (choose_model); what track, batch and the widget default to
LABEL_FREE = "label-free"
# A fluorescence movie is mostly dark background: its median pixel, between the 1st and
# 99.8th percentiles, lies at 0.00-0.17 on the shared fluorescence movies; transmitted light
# (DIC, phase contrast) puts the background at mid-grey, 0.31-0.40.
LABEL_FREE_MEDIAN = 0.25


class ModelError(ValueError):
    """A model folder is missing, truncated, unsafe or does not match its config."""


@dataclass(frozen=True)
class ZooModel:
    """One packaged model: its name, folder and what it is for."""

    name: str
    folder: Path
    description: str  # one line for the picker and ``models``
    microscopy: str  # the light microscopy it was trained for, in a few words

    @property
    def available(self) -> bool:
        """Its weights are in the package (a source checkout may lack them)."""
        return (self.folder / "weights.safetensors").is_file()


def models_dir() -> Path:
    """The package's folder of model folders."""
    return Path(__file__).resolve().parents[1] / "models"


def list_models() -> list[ZooModel]:
    """The packaged models, the default first, then by name."""
    found = []
    for config_path in sorted(models_dir().glob("*/config.json")):
        try:
            zoo = json.loads(config_path.read_text()).get("zoo", {})
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            zoo = {}  # load_model reports a broken config when the model is used
        name = zoo.get("name", config_path.parent.name)
        found.append(ZooModel(name=name, folder=config_path.parent,
                              description=zoo.get("description", ""),
                              microscopy=zoo.get("microscopy", "")))
    return sorted(found, key=lambda m: (m.name != DEFAULT_MODEL, m.name))


def choose_model(movie) -> tuple[str, str]:
    """The packaged model for ``movie`` and why, in words: ``label-free`` when its background
    is bright (transmitted light: DIC, phase contrast), else the default ``fluorescence``.

    Looks at three frames (first, middle, last): the median pixel between the 1st and 99.8th
    percentiles. A fluorescence movie taken for label-free costs little (the label-free model
    was trained on fluorescence too and scores level with the fluorescence model on unseen
    synthetic nuclei); the other way round loses most cells.
    """
    import numpy as np

    n = len(movie)
    medians = []
    for t in sorted({0, n // 2, n - 1}):
        x = np.asarray(movie[t], np.float64)
        lo, hi = np.percentile(x, [1.0, 99.8])
        if hi > lo:
            medians.append(float(np.median(np.clip((x - lo) / (hi - lo), 0, 1))))
    level = float(np.median(medians)) if medians else 0.0
    names = {m.name for m in list_models() if m.available}
    if level > LABEL_FREE_MEDIAN and LABEL_FREE in names:
        return LABEL_FREE, (f"background at {level:.2f} of the intensity range: transmitted "
                            "light (DIC or phase contrast), so the label-free model")
    return DEFAULT_MODEL, (f"background at {level:.2f} of the intensity range: fluorescence, "
                           "so the fluorescence model")


def resolve_model(model=None) -> Path:
    """The folder of ``model``: a zoo name, ``"shipped"``, a folder, or None (the default).

    A plain word that is neither a zoo name nor an existing folder is an error naming the
    models there are, rather than a "folder does not exist" about a typo.
    """
    if model is None or str(model) in (SHIPPED, AUTO):  # no movie to look at: the default
        model = DEFAULT_MODEL
    if isinstance(model, str):
        for entry in list_models():
            if entry.name == model:
                return entry.folder
        if "/" not in model and "\\" not in model and not Path(model).exists():
            names = ", ".join(m.name for m in list_models()) or "none in this installation"
            raise ModelError(f"there is no model called {model!r}; the packaged models are: "
                             f"{names} (see `napari-cosine-tracker models`), or give a model "
                             "folder")
    return Path(model)
