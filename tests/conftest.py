"""Shared helpers: the SPEC's examples as TOML strings and a small TOML builder.

CI has no copy of the SPEC's examples folder, so tests write what they need into
``tmp_path`` (or use the bundled ``derivations/``, which ship in the wheel).
"""

from __future__ import annotations

import json
import os
import pickle
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: each xdist worker checks the library itself
    fcntl = None  # type: ignore[assignment]

import pytest

from backpropcheck.checker import FileResult, Options, check_path
from backpropcheck.loader import loads
from backpropcheck.model import Derivation

REPO = Path(__file__).resolve().parent.parent
BUNDLED = REPO / "backpropcheck" / "derivations"
LIBRARY_FILES = sorted(BUNDLED.rglob("*.toml"))

# Few trials and one small symbolic shape: enough to tell right from wrong, and fast.
FAST = Options(trials=3, shapes=1)

def of_x(forward: str, claim: str) -> str:
    """A derivation of one vector x: ``y = forward``, E unknown beyond y (``grad_y`` given), ``grad_x = claim``."""
    return f"""
[derivation]
title = "y = {forward}"
[dims]
n = "n"
[inputs]
x = ["n"]
[forward]
y = "{forward}"
[loss]
upstream = "y"
[claims]
grad_x = "{claim}"
"""


DENSE_COLUMN = """
[derivation]
title = "Dense layer, column vectors"

[dims]
n = "units in layer k"
m = "units in layer k+1"

[inputs]
a = ["n"]
W = ["m", "n"]
b = ["m"]

[functions]
f = "elementwise"

[forward]
z = "W @ a + b"
h = "f(z)"

[loss]
upstream = "h"

[claims]
grad_z = "grad_h * f_prime(z)"
grad_a = "W.T @ grad_z"
grad_W = "outer(grad_z, a)"
grad_b = "grad_z"
"""

DENSE_INDEX = """
[derivation]
title = "Dense layer, W[i, j] connects input i to output j"

[dims]
n = "units in layer k"
m = "units in layer k+1"

[inputs]
a = ["n"]
W = ["n", "m"]
b = ["m"]

[functions]
f = "elementwise"

[forward]
"z[j]" = "sum(W[i, j] * a[i] for i in n) + b[j]"
h = "f(z)"

[loss]
upstream = "h"

[claims]
grad_z = "grad_h * f_prime(z)"
grad_a = "W @ grad_z"
grad_W = "outer(a, grad_z)"
"""

SOFTMAX_REGRESSION = """
[derivation]
title = "Softmax regression, a batch of B column examples"

[dims]
n = "features"
k = "classes"
B = "examples in the batch"

[inputs]
X = ["n", "B"]
W = ["k", "n"]
b = ["k"]
Y = { shape = ["k", "B"], domain = "simplex", constant = true }

[forward]
Z = "W @ X + b[:, None]"
P = "softmax(Z, axis=0)"

[loss]
E = "-sum(Y * log(P)) / B"

[claims]
grad_Z = "(P - Y) / B"
grad_W = "grad_Z @ X.T"
grad_b = "sum(grad_Z, axis=1)"
grad_X = "W.T @ grad_Z"
"""


def _toml_value(value: object) -> str:
    """A TOML value: strings and lists as JSON (a subset of TOML), raw inline tables as given."""
    if isinstance(value, str) and value.lstrip().startswith("{"):
        return value
    return json.dumps(value)


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").isalnum() else json.dumps(key)


def derivation_toml(
    *,
    dims: Mapping[str, str],
    inputs: Mapping[str, object],
    forward: Mapping[str, str],
    claims: Mapping[str, str],
    loss: Mapping[str, object],
    functions: Mapping[str, str] | None = None,
    backward: Mapping[str, str] | None = None,
    expect: Mapping[str, str] | None = None,
    check: Mapping[str, object] | None = None,
    title: str = "a test derivation",
) -> str:
    """Render a derivation file from dicts; inputs map to a shape list or a raw inline table string."""
    tables: list[tuple[str, Mapping[str, object] | None]] = [
        ("derivation", {"title": title}),
        ("dims", dims),
        ("inputs", inputs),
        ("functions", functions),
        ("forward", forward),
        ("loss", loss),
        ("backward", backward),
        ("claims", claims),
        ("expect", expect),
        ("check", check),
    ]
    out = []
    for name, items in tables:
        if items is None:
            continue
        out.append(f"[{name}]")
        out.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in items.items())
        out.append("")
    return "\n".join(out)


DENSE_TABLES: dict[str, Any] = {
    "title": "Dense tanh layer",
    "dims": {"n": "inputs", "m": "outputs"},
    "inputs": {"a": ["n"], "W": ["m", "n"], "b": ["m"]},
    "forward": {"z": "W @ a + b", "h": "tanh(z)"},
    "loss": {"upstream": "h"},
    "claims": {"grad_z": "grad_h * tanh_prime(z)", "grad_a": "W.T @ grad_z"},
}


def dense_toml(*, extra_inputs: Mapping[str, object] | None = None, **tables: Any) -> str:
    """The dense layer ``z = W @ a + b``, ``h = tanh(z)`` (W is m x n, ``upstream = "h"``, claims grad_z
    and grad_a): keyword arguments replace whole tables as in ``derivation_toml``; ``extra_inputs``
    follow a, W and b."""
    spec = {**DENSE_TABLES, **tables}
    if extra_inputs:
        spec["inputs"] = {**spec["inputs"], **extra_inputs}
    return derivation_toml(**spec)


def with_claims(text: str, claims: Mapping[str, str], expect: Mapping[str, str] | None = None) -> str:
    """Replace the [claims] table of one of the example texts above (it must be the last table)."""
    head = text.split("[claims]")[0]
    body = "[claims]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in claims.items())
    if expect:
        body += "\n[expect]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in expect.items())
    return head + body


def write(tmp_path: Path, text: str, name: str = "derivation.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def check_text(tmp_path: Path, text: str, options: Options = FAST, name: str = "derivation.toml") -> FileResult:
    """Write ``text`` to a file and check it."""
    return check_path(str(write(tmp_path, text, name)), options)


def load_text(text: str, name: str = "test.toml") -> Derivation:
    return loads(text, name)


def verdicts(result: FileResult) -> dict[str, str]:
    return {c.name: c.verdict for c in result.claims}


def claim(result: FileResult, name: str):
    for c in result.claims:
        if c.name == name:
            return c
    raise KeyError(name)


def random_sympy_expr(rng: random.Random, depth: int) -> Any:
    """A random SymPy expression over real x, y, z: sums, differences, products, quotients, exp, tanh, squares."""
    import sympy as sp  # here, not at the top: most test modules never need SymPy

    x, y, z = sp.symbols("x y z", real=True)
    leaves = [x, y, z, sp.Integer(rng.randint(1, 3)), sp.Rational(1, rng.randint(2, 4))]
    if depth == 0:
        return rng.choice(leaves)
    a, b = random_sympy_expr(rng, depth - 1), random_sympy_expr(rng, depth - 1)
    kind = rng.randrange(7)
    if kind == 0:
        return a + b
    if kind == 1:
        return a - b
    if kind == 2:
        return a * b
    if kind == 3:
        return a / (b ** 2 + 1)
    if kind == 4:
        return sp.exp(a / 3)
    if kind == 5:
        return sp.tanh(a)
    return a ** 2


@pytest.fixture
def bundled() -> Path:
    return BUNDLED


_LIBRARY_RESULTS: dict[Path, FileResult] = {}


def library_result(path: Path) -> FileResult:
    """A bundled file checked with the default options once per session: the library's verdicts
    (test_library) and its all-shapes share (test_scope) read the same result. Callers must not
    mutate it. Under pytest-xdist the workers share it through a pickle in the run's base temporary
    folder (one lock per file, so a worker that needs a file another is checking waits for it);
    xdist's ``loadgroup`` cannot do this under pytest 9.2 (pytest-xdist issue #1386)."""
    if path in _LIBRARY_RESULTS:
        return _LIBRARY_RESULTS[path]
    shared = os.environ.get(_SHARED_ENV)
    if not shared or fcntl is None:
        result = check_path(str(path), Options())
    else:
        target = Path(shared) / (str(path.relative_to(BUNDLED)).replace(os.sep, "__") + ".pickle")
        with open(target.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if target.exists():
                result = pickle.loads(target.read_bytes())
            else:
                result = check_path(str(path), Options())
                partial = target.with_suffix(".partial")
                partial.write_bytes(pickle.dumps(result))
                partial.replace(target)
    _LIBRARY_RESULTS[path] = result
    return result


_SHARED_ENV = "BACKPROPCHECK_TEST_LIBRARY_CACHE"


@pytest.fixture(scope="session", autouse=True)
def _library_cache_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Under xdist, every worker's base temporary folder sits in the run's one: the shared cache goes there."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.getbasetemp().parent / "library-results"
        folder.mkdir(exist_ok=True)
        os.environ[_SHARED_ENV] = str(folder)


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """Without pytest-xdist (not installed, or ``-p no:xdist``) the ``--numprocesses``/``--dist`` of
    pyproject's addopts are accepted and mean one process."""
    if not pluginmanager.has_plugin("xdist"):
        group = parser.getgroup("xdist fallback", "pytest-xdist is not loaded: the tests run in one process")
        group.addoption("--numprocesses", dest="numprocesses", default=None, help="ignored without pytest-xdist")
        group.addoption("--dist", dest="dist", default="no", help="ignored without pytest-xdist")


def sweep(paths: list[Path], every: int = 3) -> list[Any]:
    """A per-file sweep: every ``every``-th file (in sorted order, so each kind of file has neighbours
    in the default suite) runs by default, the rest under ``-m slow`` (which CI runs too)."""
    return [p if k % every == 0 else pytest.param(p, marks=pytest.mark.slow) for k, p in enumerate(paths)]
