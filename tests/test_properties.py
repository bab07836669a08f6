"""Property tests: the two engines agree on random expressions; random correct dense/MLP
derivations are proved; single classic mutations of their claims never hold."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from conftest import check_text, claim, derivation_toml, verdicts
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from backpropcheck.checker import Options
from backpropcheck.engines.evaluate import evaluate
from backpropcheck.engines.numeric import numeric_backend
from backpropcheck.engines.symbolic import symbol_array, symbolic_backend
from backpropcheck.lang.dims import Dim
from backpropcheck.lang.parse import Scope, parse_expression
from backpropcheck.lang.shapes import infer
from backpropcheck.model import Derivation

QUICK = Options(trials=3, shapes=1)
DEFAULT = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# exact SymPy evaluation of every entry costs ~0.4 s an example: the default run takes 10, -m slow 200 deeper ones
FEW = settings(DEFAULT, max_examples=10)
MANY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# -- (1) random well-shaped expressions: SymPy engine == NumPy engine -------------------------

N, M = Dim.of("n"), Dim.of("m")
TENSORS = {"P": (N, M), "Q": (M, N), "u": (N,), "v": (M,), "s": ()}
SHAPES = [(), (N,), (M,), (N, M), (M, N), (N, N), (M, M)]
UNARY = ["tanh", "sigmoid", "sin", "cos", "erf", "softplus", "square", "exp", "gelu"]


def _leaves(shape: tuple) -> list[str]:
    out = [name for name, s in TENSORS.items() if s == shape]
    out += [f"{name}.T" for name, s in TENSORS.items() if len(s) == 2 and tuple(reversed(s)) == shape]
    if shape == ():
        out += ["0.5", "2", "n", "1 / m"]
    return out


@st.composite
def expressions(draw: st.DrawFn, shape: tuple, depth: int) -> str:
    """A random expression of the given shape over P (n, m), Q (m, n), u (n,), v (m,) and s ()."""
    leaves = _leaves(shape)
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        if leaves:
            return draw(st.sampled_from(leaves))
    sub = lambda s: expressions(s, depth - 1)  # noqa: E731
    options: list[st.SearchStrategy[str]] = [
        st.builds(lambda f, x: f"{f}({x})", st.sampled_from(UNARY), sub(shape)),
        st.builds(lambda x, op, y: f"({x} {op} {y})", sub(shape), st.sampled_from(["+", "-", "*"]), sub(shape)),
        st.builds(lambda x, y: f"({x} / (1 + square({y})))", sub(shape), sub(shape)),
        st.builds(lambda x, c: f"({x} * {c})", sub(shape), sub(())),
    ]
    if len(shape) == 2:
        a, b = shape
        options.append(st.builds(lambda x: f"{x}.T", sub((b, a))))
        options.append(st.builds(lambda x, y: f"outer({x}, {y})", sub((a,)), sub((b,))))
        options.append(st.builds(lambda x, y: f"({x}[:, None] + {y}[None, :])", sub((a,)), sub((b,))))
        options.append(st.builds(lambda x, k: f"softmax({x}, axis={k})", sub(shape), st.sampled_from([0, 1])))
        for inner in (N, M):
            options.append(st.builds(lambda x, y: f"({x} @ {y})", sub((a, inner)), sub((inner, b))))
        if a == b:
            options.append(st.builds(lambda x: f"diag({x})", sub((a,))))
    if len(shape) == 1:
        (a,) = shape
        for inner in (N, M):
            options.append(st.builds(lambda x, y: f"({x} @ {y})", sub((a, inner)), sub((inner,))))
            options.append(st.builds(lambda x, y: f'einsum("ij,j->i", {x}, {y})', sub((a, inner)), sub((inner,))))
            options.append(st.builds(lambda x, k: f"{k}({x}, axis=1)", sub((a, inner)),
                                     st.sampled_from(["sum", "mean", "logsumexp"])))
        options.append(st.builds(lambda x: f"softmax({x}, axis=0)", sub(shape)))
        options.append(st.builds(lambda x: f"diag({x})", sub((a, a))))
    if shape == ():
        for d in (N, M):
            options.append(st.builds(lambda x, y: f"({x} @ {y})", sub((d,)), sub((d,))))
            options.append(st.builds(lambda x: f"trace({x})", sub((d, d))))
        options.append(st.builds(lambda x, k: f"{k}({x})", sub((N, M)), st.sampled_from(["sum", "mean"])))
    return draw(st.one_of(options))


def _engines_agree(text: str, shape: tuple, seed: int) -> None:
    scope = Scope(tensors=set(TENSORS), dims={"n", "m"})
    node = parse_expression(text, scope)
    assert infer(node, TENSORS) == shape, text
    sizes = {"n": 2, "m": 3}
    d = Derivation(path="<property>", title="")
    rng = np.random.default_rng(seed)
    values = {k: rng.uniform(-1, 1, size=tuple(x.value(sizes) for x in s)) for k, s in TENSORS.items()}
    with np.errstate(over="ignore", invalid="ignore"):
        numeric = np.asarray(evaluate(node, values, sizes, numeric_backend(d, 0)), dtype=float)
    if not np.all(np.isfinite(numeric)):
        assume(False)  # an overflow (exp(exp(exp(...)))) leaves nothing to compare: another example
    symbols = {k: symbol_array(k, v.shape, real=True) for k, v in values.items()}
    symbolic = evaluate(node, symbols, sizes, symbolic_backend(d))
    point = {}
    for k, v in values.items():
        for idx in np.ndindex(*v.shape):
            point[symbols[k][idx]] = sp.Rational(str(float(v[idx])))
    got = np.empty(numeric.shape)
    for idx in np.ndindex(*numeric.shape):
        got[idx] = float(sp.sympify(symbolic[idx]).xreplace(point).evalf(30))
    scale = float(np.max(np.abs(numeric))) if numeric.size else 0.0
    np.testing.assert_allclose(got, numeric, rtol=1e-9, atol=1e-12 + 1e-9 * scale, err_msg=text)


@FEW
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_symbolic_and_numeric_engines_agree(data: st.DataObject, seed: int) -> None:
    shape = data.draw(st.sampled_from(SHAPES))
    text = data.draw(expressions(shape, 3))
    _engines_agree(text, shape, seed)


@pytest.mark.slow
@MANY
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_symbolic_and_numeric_engines_agree_many(data: st.DataObject, seed: int) -> None:
    shape = data.draw(st.sampled_from(SHAPES))
    text = data.draw(expressions(shape, 4))
    _engines_agree(text, shape, seed)


def test_engines_agree_on_a_fixed_expression() -> None:
    _engines_agree("softmax(P @ (Q * 2), axis=0) + outer(u, u) * trace(P @ Q)", (N, N), 0)


# -- (2) random correct dense / MLP derivations are proved ---------------------------------------

ACTIVATIONS = ["sigmoid", "tanh", "softplus", "f"]


@dataclass
class Mlp:
    """A random dense network: ``z_l = W_l @ h_{l-1} + b_l``, ``h_l = act_l(z_l)``, and its claims."""

    layers: int
    activations: list[str]
    loss: str  # upstream | mse | mean-mse
    batch: bool
    square: bool
    claims: dict[str, str] = field(default_factory=dict)

    def dim(self, layer: int) -> str:
        return "n" if self.square else f"d{layer}"

    def h(self, layer: int) -> str:
        return "x" if layer == 0 else f"h{layer}"

    def toml(self, claims: dict[str, str] | None = None) -> str:
        dims = {self.dim(k): f"units in layer {k}" for k in range(self.layers + 1)}
        cols = ["B"] if self.batch else []
        if self.batch:
            dims["B"] = "examples in the batch"
        inputs: dict[str, object] = {"x": [self.dim(0), *cols]}
        forward: dict[str, str] = {}
        functions = None
        for k in range(1, self.layers + 1):
            inputs[f"W{k}"] = [self.dim(k), self.dim(k - 1)]
            inputs[f"b{k}"] = [self.dim(k)]
            bias = f"b{k}[:, None]" if self.batch else f"b{k}"
            forward[f"z{k}"] = f"W{k} @ {self.h(k - 1)} + {bias}"
            forward[f"h{k}"] = f"{self.activations[k - 1]}(z{k})"
            if self.activations[k - 1] == "f":
                functions = {"f": "elementwise"}
        top = self.h(self.layers)
        if self.loss == "upstream":
            loss: dict[str, object] = {"upstream": top}
        else:
            inputs["y"] = '{ shape = ' + str([self.dim(self.layers), *cols]).replace("'", '"') + ', constant = true }'
            scale = " / B" if self.loss == "mean-mse" and self.batch else ""
            loss = {"E": f"0.5 * sum(({top} - y) ** 2){scale}"}
        return derivation_toml(dims=dims, inputs=inputs, forward=forward, loss=loss, functions=functions,
                               claims=claims if claims is not None else self.claims)


@st.composite
def mlps(draw: st.DrawFn, square: bool | None = None) -> Mlp:
    layers = draw(st.integers(1, 2))
    net = Mlp(
        layers=layers,
        activations=[draw(st.sampled_from(ACTIVATIONS)) for _ in range(layers)],
        loss=draw(st.sampled_from(["upstream", "mse", "mean-mse"])),
        batch=draw(st.booleans()),
        square=draw(st.booleans()) if square is None else square,
    )
    top = net.h(layers)
    if net.loss != "upstream":
        net.claims[f"grad_{top}"] = f"({top} - y) / B" if net.loss == "mean-mse" and net.batch else f"{top} - y"
    for k in range(layers, 0, -1):
        net.claims[f"grad_z{k}"] = f"grad_h{k} * {net.activations[k - 1]}_prime(z{k})"
        below = net.h(k - 1)
        net.claims[f"grad_W{k}"] = f"grad_z{k} @ {below}.T" if net.batch else f"outer(grad_z{k}, {below})"
        net.claims[f"grad_b{k}"] = f"sum(grad_z{k}, axis=1)" if net.batch else f"grad_z{k}"
        net.claims[f"grad_{below}"] = f"W{k}.T @ grad_z{k}"
    return net


def _all_proved(tmp_path: Path, net: Mlp, seed: int) -> None:
    result = check_text(tmp_path, net.toml(), Options(seed=seed, trials=3, shapes=1, timeout=120))
    assert result.status == "passed", (net.toml(), [(c.name, c.verdict, c.message) for c in result.claims])
    assert set(verdicts(result).values()) == {"proved"}, net.toml()


@DEFAULT
@given(net=mlps(), seed=st.integers(0, 10_000))
def test_random_correct_mlps_are_proved(tmp_path: Path, net: Mlp, seed: int) -> None:
    _all_proved(tmp_path, net, seed)


@pytest.mark.slow
@MANY
@given(net=mlps(), seed=st.integers(0, 10_000))
def test_random_correct_mlps_are_proved_many(tmp_path: Path, net: Mlp, seed: int) -> None:
    _all_proved(tmp_path, net, seed)


# -- (3) single classic mutations never hold ---------------------------------------------------


def _mutations(text: str) -> list[tuple[str, str]]:
    """Every applicable classic mistake of one claim, as (kind, mutated text)."""
    out = [("flip sign", f"-({text})"), ("scale by 2", f"2 * ({text})")]
    if ".T @ " in text:
        out.append(("drop the transpose", text.replace(".T @ ", " @ ", 1)))
    if text.startswith("outer("):
        left, right = text[len("outer("):-1].split(", ")
        out.append(("swap the outer product", f"outer({right}, {left})"))
    if " @ " in text:
        out.append(("@ for *", text.replace(" @ ", " * ", 1)))
    if " * " in text:
        out.append(("* for @", text.replace(" * ", " @ ", 1)))
    if "_prime(" in text:
        out.append(("drop the f' factor", text.split(" * ")[0]))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> tuple[Mlp, str, str, str]:
    net = draw(mlps())
    name = draw(st.sampled_from(sorted(net.claims)))
    kind, text = draw(st.sampled_from(_mutations(net.claims[name])))
    return net, name, kind, text


def _never_holds(tmp_path: Path, case: tuple[Mlp, str, str, str], seed: int) -> None:
    net, name, kind, text = case
    result = check_text(tmp_path, net.toml({name: text}), Options(seed=seed, trials=3, shapes=1, timeout=120))
    c = claim(result, name)
    assert c.verdict in ("refuted", "shape-error"), (kind, text, c.verdict, c.message, net.toml({name: text}))
    assert not c.ok


@DEFAULT
@given(case=mutated(), seed=st.integers(0, 10_000))
def test_mutated_claims_never_hold(tmp_path: Path, case: tuple[Mlp, str, str, str], seed: int) -> None:
    _never_holds(tmp_path, case, seed)


@pytest.mark.slow
@MANY
@given(case=mutated(), seed=st.integers(0, 10_000))
def test_mutated_claims_never_hold_many(tmp_path: Path, case: tuple[Mlp, str, str, str], seed: int) -> None:
    _never_holds(tmp_path, case, seed)


def test_a_square_transpose_mutation_is_refuted_not_a_shape_error(tmp_path: Path) -> None:
    net = Mlp(layers=1, activations=["tanh"], loss="upstream", batch=False, square=True)
    result = check_text(tmp_path, net.toml({"grad_x": "W1 @ grad_z1", "grad_W1": "outer(x, grad_z1)"}), QUICK)
    assert verdicts(result) == {"grad_x": "refuted", "grad_W1": "refuted"}
