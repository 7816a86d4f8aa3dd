"""Widget rows built from a parameter dataclass's own metadata (core/paramspec.py), so the
widget and the command line share one label, help text and range per setting."""

from __future__ import annotations

import textwrap

from magicgui.widgets import CheckBox, Container, FloatSpinBox, SpinBox

from napari_cosine_tracker.core.paramspec import specs

__all__ = ["ParamsForm", "param_row"]


def param_row(s):
    """The widget of one :class:`~napari_cosine_tracker.core.paramspec.ParamSpec`."""
    shown = s.unset if s.default is None else s.default
    tip = s.help if s.unset is None else f"{s.help}; {s.unset:g}: learnt from the data"
    tip = textwrap.fill(tip, 72)  # Qt does not wrap plain-text tooltips
    if s.kind is bool:
        return CheckBox(name=s.name, label=s.label, value=bool(shown), tooltip=tip)
    if s.kind is int:
        return SpinBox(name=s.name, label=s.label, value=int(shown), min=int(s.minimum or 0),
                       max=int(s.maximum if s.maximum is not None else 10**6),
                       step=int(s.step or 1), tooltip=tip)
    return FloatSpinBox(name=s.name, label=s.label, value=float(shown),
                        min=float(s.minimum or 0.0),
                        max=float(s.maximum if s.maximum is not None else 1e6),
                        step=float(s.step or 0.1), tooltip=tip)


class ParamsForm(Container):
    """One row per :func:`~napari_cosine_tracker.core.paramspec.param` field of ``cls``;
    :meth:`value` builds the dataclass from the rows."""

    def __init__(self, cls, **kwargs):
        super().__init__(labels=True, **kwargs)
        self._cls = cls
        self._specs = specs(cls)
        for s in self._specs:
            self.append(param_row(s))

    def value(self):
        """The dataclass with the rows' values (an ``unset`` value stands for None)."""
        values = {}
        for s in self._specs:
            v = self[s.name].value
            values[s.name] = None if s.unset is not None and v == s.unset else v
        return self._cls(**values)
