"""The models shipped in the package, by name.

Each model is a folder under ``napari_cosine_tracker/models/``: ``weights.safetensors`` and
``config.json``, whose ``zoo`` section gives the name users type (``track --model NAME``, the
widget's picker), one line on what the model is for, and the light microscopy it suits. The
first model of :data:`DEFAULT_MODEL` is what runs when no model is named: the one a
fluorescent-nuclei movie needs.

Anywhere a model is asked for, a name from this zoo, ``"shipped"`` (the default model, the
name older scripts use) or a model folder of one's own may be given; :func:`resolve_model`
turns any of them into a folder. Nothing here imports torch, so listing the models is quick.

Public API: :data:`DEFAULT_MODEL`, :class:`ZooModel`, :func:`list_models`,
:func:`resolve_model`, :func:`models_dir`, :class:`ModelError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_MODEL", "ModelError", "ZooModel", "list_models", "models_dir",
           "resolve_model"]

DEFAULT_MODEL = "fluorescence"
SHIPPED = "shipped"  # older name of the default model, still accepted


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


def resolve_model(model=None) -> Path:
    """The folder of ``model``: a zoo name, ``"shipped"``, a folder, or None (the default).

    A plain word that is neither a zoo name nor an existing folder is an error naming the
    models there are, rather than a "folder does not exist" about a typo.
    """
    if model is None or str(model) == SHIPPED:
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
