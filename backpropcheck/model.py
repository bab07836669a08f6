"""The parsed, shape-checked derivation: what the loader hands to the engines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import DerivationError
from .lang.dims import Dim, Shape
from .lang.ir import IndexDef, Node

DOMAINS = ("real", "positive", "unit", "simplex", "onehot", "index", "binary")
EXPECTATIONS = ("holds", "refuted", "shape-error")


@dataclass
class Input:
    name: str
    shape: Shape
    domain: str = "real"
    axis: int = 0
    constant: bool = False
    range: Dim | None = None  # domain "index": integers in 0 … range-1


@dataclass
class Definition:
    """``name = text`` in [forward] or [backward]; ``index`` is set for index form."""

    name: str
    text: str
    node: Node | None
    shape: Shape
    index: IndexDef | None = None
    key: str = ""

    @property
    def root(self) -> Node:
        return self.index.body if self.index is not None else self.node  # type: ignore[return-value]


@dataclass
class Claim:
    name: str  # grad_X
    target: str  # X
    text: str
    node: Node | None
    expected: str = "holds"
    error: DerivationError | None = None  # parse or shape problem found before any trial
    uses: frozenset[str] = frozenset()  # every name the claim reads, through [backward] helpers
    index: IndexDef | None = None  # "grad_x[t]" = "...": the claim in index form (node is its body)

    @property
    def root(self) -> Node:
        """The expression evaluated (only claims without an ``error`` are evaluated: it is set)."""
        assert self.node is not None, f"{self.name} has no expression"
        return self.node


@dataclass
class Loss:
    """Either ``E = expression`` or ``upstream = [names]`` (E unknown, grad_h given)."""

    expression: Node | None = None
    text: str = ""
    upstream: tuple[str, ...] = ()


# The range of every [check] setting, shared by the loader, the CLI and the pytest plugin, so a file
# cannot switch off its own evidence: at least one numeric trial and one symbolic dim assignment,
# and no tolerance past what float64 rounding can explain (1e-3 relative, 1e-6 absolute; the
# evaluations here round at ~1e-13). ``None``: no upper bound (the limits bound those).
SETTING_RANGES: dict[str, tuple[int | float, int | float | None]] = {
    "seed": (0, None), "trials": (1, None), "shapes": (1, None), "max_dim": (2, None),
    "rtol": (0.0, 1e-3), "atol": (0.0, 1e-6),
}


def setting_range_text(key: str) -> str:
    return range_text(*SETTING_RANGES[key])


def range_text(low: float, high: float | None) -> str:
    """A range as the error messages state it: "from 0 to 0.001", "at least 1"."""
    return f"from {low:g} to {high:g}" if high is not None else f"at least {low:g}"


DEFAULT_RTOL = 1e-7
DEFAULT_ATOL = 1e-12


@dataclass(frozen=True)
class CheckSettings:
    """The six settings of [check] (their ranges: :data:`SETTING_RANGES`), wherever they come from.

    ``None`` means "not given here": :meth:`over` layers the command line (or the API's arguments)
    over the file's [check] over :data:`DEFAULT_CHECK`. The checker's ``Options`` extend this class."""

    seed: int | None = None
    trials: int | None = None
    shapes: int | None = None
    max_dim: int | None = None
    rtol: float | None = None
    atol: float | None = None

    def resolve(self, *below: CheckSettings) -> Resolved:
        """Each setting from the first layer that gives it: this one, then ``below`` in order, then
        :data:`DEFAULT_CHECK`."""
        layers = (self, *below)
        values = {key: next((vars(s)[key] for s in layers if vars(s)[key] is not None), vars(DEFAULT_CHECK)[key])
                  for key in SETTING_RANGES}
        return Resolved(**values)

    def given(self) -> dict[str, int | float]:
        """The settings this layer gives, in table order."""
        return {k: vars(self)[k] for k in SETTING_RANGES if vars(self)[k] is not None}


@dataclass(frozen=True)
class Resolved:
    """:class:`CheckSettings` after layering: every setting has its value."""

    seed: int
    trials: int
    shapes: int
    max_dim: int
    rtol: float
    atol: float

    def __getitem__(self, key: str) -> Any:
        """``settings["max_dim"]``, as when the resolved settings were a dict."""
        if key not in SETTING_RANGES:
            raise KeyError(key)
        return vars(self)[key]


DEFAULT_CHECK = Resolved(seed=0, trials=20, shapes=3, max_dim=64, rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL)


@dataclass
class Derivation:
    """A loaded derivation file. Never changed in place once loaded (only the loader builds it): the engines
    keep what they work out from it, and from its trees, by identity (``workload.file_memo``, evaluate's post
    orders); a changed derivation is a new object."""

    path: str
    title: str
    summary: str = ""
    references: list[str] = field(default_factory=list)
    dims: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, Input] = field(default_factory=dict)
    functions: set[str] = field(default_factory=set)
    forward: list[Definition] = field(default_factory=list)
    loss: Loss = field(default_factory=Loss)
    backward: list[Definition] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    check: CheckSettings = field(default_factory=CheckSettings)
    integer_forward: list[str] = field(default_factory=list)  # forward variables that are integer arrays

    @property
    def integers(self) -> set[str]:
        """Inputs and forward variables that are integer arrays (``domain = "index"``)."""
        return {n for n, i in self.inputs.items() if i.domain == "index"} | set(self.integer_forward)

    def shape_rules(self) -> Any:
        """The shape rules as the loader had them (a context manager): every affine dim of an input's shape is at
        least 1, so ``x[k:n]`` next to an input of ``n - k`` entries is a valid slice (``positive_dims``)."""
        from .lang.ops.core import positive_dims

        return positive_dims(inp.shape for inp in self.inputs.values())

    def shape_of(self, name: str) -> Shape:
        if name in self.inputs:
            return self.inputs[name].shape
        for d in self.forward + self.backward:
            if d.name == name:
                return d.shape
        if name.startswith("grad_"):
            return self.shape_of(name[5:])
        raise KeyError(name)

    @property
    def differentiable(self) -> list[str]:
        """Inputs that are not constants, then forward variables: everything with a ``grad_``."""
        return [n for n, i in self.inputs.items() if not i.constant] + [
            d.name for d in self.forward if d.name not in self.integer_forward
        ]
