"""Parameter metadata on the dataclasses themselves: one home for a setting's label, help,
range and step, from which both the command line's flags and the widget's rows are built.

A field declared with :func:`param` carries that metadata; :func:`add_arguments` turns the
fields of a dataclass into ``argparse`` flags (``gap_frames`` -> ``--gap-frames``; a boolean
that defaults to True -> ``--no-<name>``) and :func:`from_args` reads them back. The napari
layer builds its rows from :func:`specs` (``plugin/params_form.py``), so a label or range is
changed in one place.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, replace

__all__ = ["param", "ParamSpec", "specs", "add_arguments", "given", "from_args",
           "min_daughter_ratio"]

_KEY = "nct_param"


def param(default, label: str, help: str, *, minimum=None, maximum=None, step=None,
          unset: float | None = None):
    """A dataclass field with its user-facing metadata.

    ``unset``: for an optional number (default None: "work it out"), the value a widget
    shows for None (e.g. 0 = learnt from the movie).
    """
    return field(default=default, metadata={_KEY: ParamSpec("", label, help, minimum, maximum,
                                                           step, unset, default)})


def min_daughter_ratio(default: float = 0.25):
    """The one description of the fragment-or-division setting, shared by the pair tracker
    (``TrackParams``) and the global linker (``LinkParams``)."""
    return param(default, "Smallest daughter",
                 "A cell that splits into a piece smaller than this fraction of the other (its "
                 "sister) is a fragment breaking off, not a division: the larger piece keeps the "
                 "track. "
                 "Lower it (0 = every split) for cells that divide unequally, e.g. budding.",
                 minimum=0.0, maximum=0.95, step=0.05)


@dataclass(frozen=True)
class ParamSpec:
    name: str
    label: str
    help: str
    minimum: float | None
    maximum: float | None
    step: float | None
    unset: float | None
    default: object

    @property
    def kind(self) -> type:
        """bool, int or float."""
        if isinstance(self.default, bool):
            return bool
        if isinstance(self.default, int) and self.unset is None:
            return int
        return float

    @property
    def flag(self) -> str:
        dashed = self.name.replace("_", "-")
        return f"--no-{dashed}" if self.kind is bool and self.default else f"--{dashed}"


def specs(cls) -> list[ParamSpec]:
    """The :class:`ParamSpec` of every field of ``cls`` declared with :func:`param`."""
    out = []
    for f in fields(cls):
        spec = f.metadata.get(_KEY)
        if spec is not None:
            default = f.default if f.default is not MISSING else spec.default
            out.append(replace(spec, name=f.name, default=default))
    return out


def add_arguments(parser, cls, *, default_text: str | None = None) -> None:
    """One flag per :func:`param` field of ``cls``; defaults stay with the dataclass.

    ``default_text``: what the help says the default is, where it is not the dataclass's
    own (e.g. "the model's recommended setting").
    """
    for s in specs(cls):
        if s.kind is bool:
            parser.add_argument(s.flag, dest=s.name, action="store_false" if s.default else "store_true",
                                default=None, help=f"do not {s.help}" if s.default else s.help)
            continue
        shown = default_text or ("learnt" if s.default is None else s.default)
        parser.add_argument(s.flag, dest=s.name, type=s.kind, default=None, metavar="N" if s.kind is int else "X",
                            help=f"{s.label}: {s.help} (default: {shown})")


def given(cls, args) -> dict:
    """The :func:`param` fields of ``cls`` whose flags were given, as ``{name: value}``."""
    return {s.name: getattr(args, s.name) for s in specs(cls)
            if getattr(args, s.name, None) is not None}


def from_args(cls, args, **overrides):
    """``cls`` from parsed flags: flags not given keep the dataclass's defaults."""
    values = given(cls, args)
    values.update(overrides)
    return cls(**values)
