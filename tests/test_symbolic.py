"""engines/symbolic.py: SymPy's per-neuron truth has the textbook structure, its partials equal
sp.diff, its templates and matmul match the plain constructions, and claims decide."""

from __future__ import annotations

import random

import numpy as np
import pytest
import sympy as sp
from conftest import DENSE_COLUMN, DENSE_INDEX, REPO, SOFTMAX_REGRESSION, load_text, random_sympy_expr

from backpropcheck.checker import Options, check_path
from backpropcheck.engines.symbolic import SymbolicTruth, partials
from backpropcheck.lang import ops
from backpropcheck.lang.symfuncs import generic
from backpropcheck.loader import load

x, y, z = sp.symbols("x y z", real=True)


def test_symbolic_truth_of_the_dense_layer_has_the_outer_product_structure() -> None:
    d = load_text(DENSE_COLUMN)
    truth = SymbolicTruth(d, {"n": 3, "m": 2})
    a, W = truth.env["a"], truth.env["W"]
    z, grad_h = truth.env["z"], truth.upstream["h"]
    f_prime = generic("f_prime")
    assert truth.grads["W"].shape == (2, 3)
    for i in range(2):
        # grad_z[i] = grad_h[i] * f'(z[i]): the element-wise (diagonal Jacobian) step
        assert sp.expand(truth.grads["z"][i] - grad_h[i] * f_prime(z[i])) == 0
        assert sp.expand(truth.grads["b"][i] - truth.grads["z"][i]) == 0
        for j in range(3):
            # grad_W[i, j] = grad_z[i] * a[j]: the outer product
            assert sp.expand(truth.grads["W"][i, j] - truth.grads["z"][i] * a[j]) == 0
    for j in range(3):
        # grad_a[j] = sum_i W[i, j] grad_z[i]: W.T @ grad_z
        expected = sum(W[i, j] * truth.grads["z"][i] for i in range(2))
        assert sp.expand(truth.grads["a"][j] - expected) == 0
    # the forward atom z[i] is defined per neuron
    assert sp.expand(truth.local[z[1]] - (W[1, 0] * a[0] + W[1, 1] * a[1] + W[1, 2] * a[2] + truth.env["b"][1])) == 0


def test_symbolic_truth_of_the_index_convention_uses_w_untransposed() -> None:
    d = load_text(DENSE_INDEX)
    truth = SymbolicTruth(d, {"n": 2, "m": 3})
    W = truth.env["W"]
    gz = truth.grads["z"]
    for i in range(2):
        assert sp.expand(truth.grads["a"][i] - sum(W[i, j] * gz[j] for j in range(3))) == 0


def test_symbolic_claims_decide() -> None:
    d = load_text(DENSE_COLUMN)
    truth = SymbolicTruth(d, {"n": 3, "m": 2})
    rng = random.Random(0)
    right = truth.claim_value(d.claims[2].node)  # outer(grad_z, a)
    for idx in np.ndindex(2, 3):
        assert truth.decide(right[idx] - truth.grads["W"][idx], rng).zero is True
    # a generic f cannot be evaluated at a point, so a wrong claim stays undecided here
    assert truth.decide(truth.grads["W"][0, 1], rng).zero is not True
    concrete = load_text(SOFTMAX_REGRESSION)
    softmax = SymbolicTruth(concrete, {"n": 2, "k": 3, "B": 2})
    entry = softmax.grads["W"][0, 1]
    decision = softmax.decide(2 * entry - entry, rng)
    assert decision.zero is False and decision.value is not None and decision.value != 0


def test_symbolic_simplex_columns_sum_to_one() -> None:
    d = load_text(SOFTMAX_REGRESSION)
    truth = SymbolicTruth(d, {"n": 2, "k": 3, "B": 2})
    Y = truth.env["Y"]
    for col in range(2):
        assert truth.simplex[Y[2, col]] == 1 - Y[0, col] - Y[1, col]
    # (P - Y) / B holds only with the simplex substitution
    rng = random.Random(1)
    claim = truth.claim_value(d.claims[0].node)
    for idx in np.ndindex(3, 2):
        assert truth.decide(claim[idx] - truth.grads["Z"][idx], rng).zero is True


def test_partials_equal_sympy_diff():
    rng = random.Random(3)
    wrt = {x, y, z}
    for _ in range(60):
        e = sp.sympify(random_sympy_expr(rng, 3)) + x * y * random_sympy_expr(rng, 1)
        got = partials(e, wrt, {})
        for s in wrt:
            expected = sp.diff(e, s)
            assert got.get(s, sp.Integer(0)) == expected, (e, s)


def test_partials_by_template_are_sympy_diff_as_built() -> None:
    """The templates' renaming (engines/partials._renamed rebuilds without re-sorting): each partial is the
    very expression ``sp.diff`` builds (equal arguments, in order), for names whose order differs from their
    positions, symbols of both assumption sets, our own functions and one template serving many terms."""
    from backpropcheck.lang.symfuncs import MaxOf, Relu, Step

    rng = random.Random(8)
    real = [sp.Symbol(n, real=True) for n in ("∇z[1]", "W[0,10]", "W[0,2]", "a[1]", "b", "Z[1,0]")]
    pos = [sp.Symbol(n, positive=True) for n in ("p[0]", "P[3]", "s")]
    f = generic("f_prime")
    templates: dict = {}
    for _ in range(90):
        u, v, w = rng.sample(real + pos, 3)
        shapes = [sp.tanh(u * v + w) * u, sp.exp(u - v) / (1 + sp.exp(w)) ** 2, -sp.log(u * v + w ** 2 + 1),
                  MaxOf(u, v, w) * Step(u - w), Relu(u - v) ** 2 * w, f(u) * v ** 3 - u / w,
                  sp.Rational(1, 2) * u * (v - w) ** 2, sp.sqrt(u ** 2 + v) * w, -u * v * (w + 1), 3 * u * v * w,
                  u * v, -u * v, u * v * w, u * (v + w), -u * (v + w), 2 * u * (v - w), u * v * sp.pi]
        e = rng.choice(shapes)
        got = partials(e, set(real + pos), templates)
        for s in real + pos:
            want = sp.diff(e, s)
            have = got.get(s, sp.Integer(0))
            assert have == want and have.args == want.args, (e, s, have, want)


def test_truth_is_the_same_with_templates_shared_across_neurons():
    d = load(str(REPO / "bench" / "dense_sigmoid_mse.toml"))
    truth = SymbolicTruth(d, {"n": 3, "m": 4})
    for j in range(4):
        z_j = truth.env["z"][j]
        h_j = truth.env["h"][j]
        # a sigmoid's partial reads its own atom, s·(1 − s), as tanh's 1 − h² does: SymPy's derivative in value
        assert truth.grads["z"][j] == h_j * (1 - h_j) * truth.grads["h"][j]
        assert sp.simplify((h_j * (1 - h_j)).xreplace({h_j: truth.local[h_j]}) - sp.diff(truth.local[h_j], z_j)) == 0


def test_symbolic_matmul_matches_numpy_object_matmul():
    a = np.array([[x, y, 2], [z, x * y, 1]], dtype=object)
    b = np.array([[1, x], [y, 2], [z, 3]], dtype=object)
    vec = np.array([x, y, z], dtype=object)
    for left, right in ((a, b), (a, vec), (vec, b), (vec, vec)):
        expected = np.asarray(left @ right, dtype=object)
        got = np.asarray(ops._matmul_sym(left, right), dtype=object)
        assert got.shape == expected.shape
        assert all(g == e for g, e in zip(got.flat, expected.flat))
    with pytest.raises(ValueError):
        ops._matmul_sym(a, a)


def test_softmax_entries_differentiate_through_themselves():
    from backpropcheck.lang.symfuncs import SoftmaxEntry, softmax_as_exp

    a, b, c = sp.symbols("a b c", real=True)
    s0 = SoftmaxEntry(sp.Integer(0), a, b, c)
    s1 = SoftmaxEntry(sp.Integer(1), a, b, c)
    assert sp.diff(s0, a) == s0 * (1 - s0)
    assert sp.diff(s0, b) == -s0 * s1
    # the same derivative as the exponential form's
    exp_form = softmax_as_exp(s0)
    assert sp.simplify(softmax_as_exp(sp.diff(s0, b)) - sp.diff(exp_form, b)) == 0
    assert abs(float(s0.subs({a: 1, b: 0, c: 0}).evalf()) - float(sp.E / (sp.E + 2))) < 1e-15


def test_claims_in_either_form_prove_against_a_softmax_or_a_log_softmax(tmp_path):
    text = """
[derivation]
title = "softmax forms"
[dims]
k = "classes"
B = "batch"
[inputs]
Z = ["k", "B"]
Y = { shape = ["k", "B"], domain = "simplex", constant = true }
[forward]
L = "log_softmax(Z, axis=0)"
P = "softmax(Z, axis=0)"
[loss]
E = "-sum(Y * L) + sum(P * P)"
[claims]
grad_L = "-Y"
grad_P = "2 * P"
grad_Z = "exp(L) - Y + P * (grad_P - sum(grad_P * P, axis=0, keepdims=True))"
"""
    path = tmp_path / "forms.toml"
    path.write_text(text)
    result = check_path(str(path), Options(trials=3, shapes=2))
    assert [c.verdict for c in result.claims] == ["proved"] * 3, [c.message for c in result.claims]


def test_formal_forgets_the_simplex_substitution_already_memoised() -> None:
    """A truth shared with the all-shapes certificate turns formal: the last entry of a simplex column is an
    independent atom again, even for expressions the checker already converted with the substitution."""
    d = load(str(REPO / "derivations" / "softmax_cross_entropy.toml"))
    truth = SymbolicTruth(d, {"n": 2, "k": 3})
    (last, rest), = list(truth.simplex.items())[:1]
    assert truth.exact_zero(last - rest, over_inputs=False) is not None  # on the domain: equal
    truth.formal()
    assert truth.simplex == {}
    assert truth.exact_zero(last - rest, over_inputs=False) is None  # as indeterminates: not an identity


def test_fast_products_build_exactly_what_sympy_builds() -> None:
    """engines/products.mul: the same expression as ``x * y`` (equal, same hash, same arguments) on symbols
    with every assumption the truth uses, rationals, zeros, ones, infinities and random expressions."""
    from backpropcheck.engines.products import mul, mul_arrays

    rng = random.Random(11)
    symbols = [sp.Symbol(f"w[{i},{j}]", real=True) for i in range(3) for j in range(3)]
    symbols += [sp.Symbol(f"p[{i}]", positive=True) for i in range(3)] + [sp.Symbol("∇z[0]", real=True)]
    numbers = [sp.Integer(0), sp.Integer(1), sp.Integer(-1), sp.Integer(3), sp.Rational(1, 2), sp.Rational(-2, 7),
               sp.oo, sp.zoo, sp.nan]
    pool = symbols + numbers + [random_sympy_expr(rng, 3) for _ in range(40)]
    # symbols equal to x and w[0,0] but other objects, as SymPy makes again once its cache let the first go
    twin = sp.Symbol.__xnew__(sp.Symbol, "x", real=True)
    assert twin == x and twin is not x
    pool += [twin, sp.Symbol.__xnew__(sp.Symbol, "w[0,0]", real=True)]
    pool += [x, y, z, x * y, -2 * x * z, x ** 2 * y, y * z / x, sp.exp(x) * y, sp.pi * x * z, sp.Float(1.5) * y * z,
             sp.oo * x * y, symbols[0] * symbols[1], sp.Rational(1, 3) * symbols[2] * sp.tanh(x)]
    pool += [sp.Symbol("A", commutative=False), sp.Symbol("B", commutative=False), sp.Symbol("c"),
             sp.Symbol("w[0,0]", positive=True)]  # the name of a real symbol, other assumptions
    for a in pool:
        for b in pool:
            got, want = mul(a, b), a * b
            if want is sp.nan:
                assert got is sp.nan
                continue
            assert got == want and hash(got) == hash(want) and got.args == want.args, (a, b, got, want)
            assert got.is_commutative == want.is_commutative and type(got) is type(want), (a, b)
    a = np.array(symbols[:4] + [sp.Integer(0)], dtype=object)
    b = np.array([sp.Integer(2)] + symbols[4:8], dtype=object)
    assert list(mul_arrays(a[:, None], b[None, :]).flat) == list((a[:, None] * b[None, :]).flat)


def test_canonical_key_orders_as_basic_compare() -> None:
    """engines/order.canonical_key: for every pair of a mixed pool (symbols with different assumptions and
    names, numbers of every kind, functions of ours and SymPy's, random expressions), the key's order is
    ``Basic.compare``'s, including ties; content compare treats specially has no key."""
    from sympy.core.basic import Basic

    from backpropcheck.engines.order import NoKey, canonical_key
    from backpropcheck.lang.symfuncs import Step

    rng = random.Random(17)
    a, b = sp.Symbol("a[0]", real=True), sp.Symbol("a[1]", positive=True)
    pool = [a, b, sp.Symbol("a[0]", positive=True), sp.Symbol("∇z[0]", real=True), sp.Symbol("q"), sp.Dummy("d"),
            sp.Integer(0), sp.Integer(1), sp.Integer(-1), sp.Integer(7), sp.Rational(1, 2), sp.Rational(-3, 5),
            sp.Float(0.25), sp.Float(2.0), sp.pi, sp.E, sp.I, sp.oo, sp.exp(a), sp.tanh(b), sp.log(a + 2),
            Step(a - b), Step(b - a), generic("f_prime")(a), a * b, 2 * a * b, a ** 2, a ** b, a + b, a - b]
    pool += [random_sympy_expr(rng, 3) for _ in range(60)]
    for p in pool:
        for q in pool:
            kp, kq = canonical_key(p), canonical_key(q)
            assert (kp > kq) - (kp < kq) == Basic.compare(p, q), (p, q)

    from backpropcheck.engines import order
    from backpropcheck.engines.products import mul

    symbols = [p for p in pool if p.__class__ is sp.Symbol]
    for p in symbols:  # the key products.mul records for the product it builds is the one computed afresh
        for q in symbols:
            product = mul(p, q)
            recorded = canonical_key(product)
            order._KEYS.pop(id(product), None)
            assert canonical_key(product) == recorded, (p, q)

    class Tagged(sp.Basic):  # content compare turns into a Basic (a frozenset) or compares as Relationals
        def _hashable_content(self):
            return (frozenset(self.args),) if len(self.args) == 1 else ((self.args[0],),)

    for odd in (Tagged(a), Tagged(a, b)):
        with pytest.raises(NoKey):
            canonical_key(odd)


def test_fast_matmul_equals_the_op_tables_symbolic_matmul() -> None:
    from backpropcheck.engines.products import matmul_arrays
    from backpropcheck.lang.ops.linalg import _matmul_sym

    rng = random.Random(5)

    def arr(*shape: int) -> np.ndarray:
        out = np.empty(shape, dtype=object)
        for idx in np.ndindex(*shape):
            out[idx] = rng.choice([sp.Symbol(f"a{rng.randrange(6)}", real=True), sp.Integer(0), sp.Integer(2),
                                   random_sympy_expr(rng, 2)])
        return out

    for sa, sb in (((2, 3), (3, 4)), ((3,), (3, 2)), ((2, 3), (3,)), ((4,), (4,))):
        a, b = arr(*sa), arr(*sb)
        got, want = matmul_arrays(a, b), _matmul_sym(a, b)
        assert got.shape == want.shape and all(g == w for g, w in zip(np.ravel(got), np.ravel(want)))


def test_symbolic_einsum_sum_and_outer_build_what_numpys_object_arithmetic_builds() -> None:
    """The op table's symbolic einsum and sum (and the engine's faster ones, and its outer) sum each entry's
    terms at once: the very expressions NumPy's pairwise ``*`` and ``+`` on object arrays build."""
    from backpropcheck.engines.products import einsum_arrays, outer_arrays, sum_arrays
    from backpropcheck.lang.ops.core import sum_sym
    from backpropcheck.lang.ops.linalg import _einsum_sym

    rng = random.Random(11)

    def arr(*shape: int) -> np.ndarray:
        out = np.empty(shape, dtype=object)
        for idx in np.ndindex(*shape):
            out[idx] = rng.choice([sp.Symbol(f"a{rng.randrange(6)}", real=True), sp.Integer(0), sp.Rational(2, 3),
                                   random_sympy_expr(rng, 2)])
        return out

    def same(got: np.ndarray, want: np.ndarray) -> bool:
        want = np.asarray(want, dtype=object)
        return got.shape == want.shape and all(g == sp.sympify(w) for g, w in zip(got.flat, want.flat))

    for spec, shapes in (("ij,jk->ik", [(2, 3), (3, 4)]), ("hts,hsd->htd", [(2, 3, 3), (2, 3, 4)]),
                         ("htd,hsd->hts", [(2, 3, 4), (2, 3, 4)]), ("ij->ji", [(2, 3)]), ("ij->", [(2, 3)]),
                         ("ij,j,k->ik", [(2, 3), (3,), (2,)]), ("ab,bc,cd->ad", [(2, 2), (2, 3), (3, 2)])):
        args = [arr(*s) for s in shapes]
        want = np.einsum(spec, *args)
        assert same(_einsum_sym(*args, spec=spec), want) and same(einsum_arrays(*args, spec=spec), want), spec
    a = arr(2, 3, 4)
    for axis in (None, 0, -1, (0, 2), (2, 0, 1)):
        for keepdims in (False, True):
            want = np.sum(a, axis=axis, keepdims=keepdims)
            assert same(sum_sym(a, axis, keepdims), want) and same(sum_arrays(a, axis, keepdims), want)
    u, v = arr(3), arr(4)
    assert same(outer_arrays(u, v), np.multiply.outer(u, v))


def test_fast_sums_build_exactly_what_sympy_builds() -> None:
    """engines/products.add: the same expression as ``sympy.Add(*terms)`` for distinct products and symbols
    (built directly) and for everything else (like terms, coefficients, numbers, nested sums, infinities)."""
    from backpropcheck.engines.products import add

    rng = random.Random(3)
    symbols = [sp.Symbol(f"x[{i}]", real=True) for i in range(5)] + [sp.Symbol("p", positive=True),
                                                                       sp.Symbol("∇y[0]", real=True)]
    products = [a * b for a in symbols for b in symbols] + [a * b * c for a, b, c in zip(symbols, symbols[1:],
                                                                                         symbols[2:])]
    others = [sp.Integer(0), sp.Integer(2), sp.Rational(1, 3), sp.oo, 3 * symbols[0], -symbols[1] * symbols[2],
              symbols[0] + symbols[1], sp.exp(symbols[0]), symbols[2] ** 2 * symbols[3]]
    for k in range(300):
        pool = products + symbols + (others if k % 2 else [])
        terms = [rng.choice(pool) for _ in range(rng.randint(0, 12))]
        if k % 3 == 0:
            terms += [random_sympy_expr(rng, 2)]
        got, want = add(*terms), sp.Add(*terms)
        assert got == want and hash(got) == hash(want) and got.args == want.args, (terms, got, want)
        assert type(got) is type(want) and got.is_commutative == want.is_commutative, terms
    distinct = rng.sample(products, 20)  # the direct route: the canonical order of SymPy's own Add
    assert add(*distinct).args == sp.Add(*distinct).args
    for _ in range(100):  # sums of sums (an index-form sum over two axes), distinct or overlapping
        nested = [sp.Add(*rng.sample(products + symbols, rng.randint(2, 4))) for _ in range(rng.randint(1, 4))]
        nested += rng.sample(products, rng.randint(0, 3)) + (rng.sample(others, 1) if rng.random() < 0.2 else [])
        got, want = add(*nested), sp.Add(*nested)
        assert got == want and hash(got) == hash(want) and got.args == want.args, (nested, got, want)
    from backpropcheck.engines.products import add_arrays

    left = np.array(rng.sample(products + symbols + others, 6), dtype=object).reshape(2, 3)
    right = np.array(rng.sample(products + symbols + others, 3) + [1, 2.5, 0], dtype=object).reshape(2, 3)
    for a, b in ((left, right), (left, right[:1]), (right, left[:, :1])):  # with broadcasting, Python numbers too
        got, want = add_arrays(a, b), a + b
        assert got.shape == want.shape and all(g == w and type(g) is type(w) for g, w in zip(got.flat, want.flat))
    pairs = [a * b for k, a in enumerate(symbols) for b in symbols[k + 1:]]  # distinct, no squares
    rows = [sp.Add(*pairs[k:k + 3]) for k in range(0, 12, 3)]  # the direct route
    assert add(*rows).args == sp.Add(*rows).args and len(add(*rows).args) == 12


def test_one_expanded_entry_is_that_entry_of_the_expanded_adjoint() -> None:
    """truth.grads.entry (a counterexample's per-neuron expression) expands one entry, equal to the whole
    array's, and names an unknown variable as a KeyError like the mapping does."""
    d = load(str(REPO / "derivations" / "mlp_two_layer_mse.toml"))
    sizes = {n: 2 + k for k, n in enumerate(d.dims)}
    alone, whole = SymbolicTruth(d, sizes), SymbolicTruth(d, sizes)
    for name in whole.grads:
        for idx in np.ndindex(*whole.grads[name].shape):
            got = alone.grads.entry(name, idx)
            assert got == whole.grads[name][idx] and got.free_symbols.isdisjoint(alone.grad_atoms), (name, idx)
    assert not alone.grads.arrays  # no whole array was expanded for it
    with pytest.raises(KeyError):
        alone.grads.entry("no_such_variable", ())


def test_a_mask_against_a_max_is_its_arg_max_indicator() -> None:
    """lang/symfuncs: StepGe(x_i - max(xs)) (``x >= max(x)``) is the indicator that x_i reaches the max, ties
    included; Step(x_i - max(xs)) (``x > max(x)``) is 0; the other way round, ``max > x`` is 1 minus that
    indicator and ``max >= x`` is 1. An entry is found in the max by identity or, written differently, by
    expansion. A max holding an entry twice is the max of its distinct entries (max(concat([x, x])) is
    max(x)), so its mask is the same."""
    from backpropcheck.lang.symfuncs import MaxOf, MinOf, Step, StepGe

    a, b, c = (sp.Symbol(n, real=True) for n in "abc")
    reaches = StepGe(a - b) * StepGe(a - c)
    assert StepGe(a - MaxOf(a, b, c)) == reaches
    assert Step(a - MaxOf(a, b, c)) == 0
    assert Step(MaxOf(a, b, c) - a) == 1 - reaches
    assert StepGe(MaxOf(a, b, c) - a) == 1
    assert StepGe(a - MinOf(a, b, c)) == 1 and Step(a - MinOf(a, b, c)) == 1 - StepGe(b - a) * StepGe(c - a)
    assert StepGe(MinOf(a, b, c) - a) == StepGe(b - a) * StepGe(c - a)
    assert StepGe(a * b + a * c - MaxOf(a * (b + c), b)) == StepGe(a * (b + c) - b)
    twice = MaxOf(a, b, a)
    assert twice == MaxOf(a, b) and MinOf(b, a, b, a) == MinOf(b, a)
    assert StepGe(a - twice) == StepGe(a - b)


def test_the_partials_of_a_max_share_a_tie_evenly() -> None:
    """lang/symfuncs.ArgShare: the partial of max(x_0, …) by x_i is 1 at the only largest entry, 1/k at each of
    k tied ones, 0 elsewhere, as the numeric engine's reverse rule; so at a tie by construction (the max over
    copies) the partials still sum to 1. Off ties it is the arg-max indicator, and its exact form agrees."""
    from backpropcheck.lang.symfuncs import ArgShare, MaxOf, MinOf

    a, b, c = (sp.Symbol(n, real=True) for n in "abc")
    for extreme in (MaxOf(a, b, c), MinOf(a, b, c)):
        partials = [sp.diff(extreme, s) for s in (a, b, c)]
        assert all(isinstance(p, ArgShare) for p in partials)
        for point in ({a: 1, b: 1, c: 0}, {a: 0, b: 0, c: 0}, {a: 2, b: 0, c: 2}, {a: -1, b: 3, c: 2}):
            values = [p.xreplace(point) for p in partials]
            assert sum(values) == 1, (extreme, point, values)
            best = (max if extreme.func is MaxOf else min)(point.values())
            tied = [k for k, s in enumerate((a, b, c)) if point[s] == best]
            assert all(values[k] == sp.Rational(1, len(tied)) for k in tied)
            assert [p.as_steps().xreplace(point) for p in partials] == values
        off_ties = {a: 3, b: -1, c: 2}
        assert [p.indicator().xreplace(off_ties) for p in partials] == [p.xreplace(off_ties) for p in partials]


def test_symbol_arrays_are_the_entries_symbols_with_their_assumptions() -> None:
    """engines/symbolic.symbol_array (memoised): entry ``W[j,i]`` is SymPy's symbol of that name and
    those assumptions, the same object each time, and a name with other assumptions is another symbol."""
    from backpropcheck.engines.symbolic import symbol_array

    real, again, positive = (symbol_array("W", (2, 3), real=True), symbol_array("W", (2, 3), real=True),
                             symbol_array("W", (2, 3), positive=True))
    assert real[1, 2] == sp.Symbol("W[1,2]", real=True) and real[1, 2].is_real and real[1, 2].is_positive is None
    assert all(x is y for x, y in zip(real.flat, again.flat))
    assert positive[0, 0] == sp.Symbol("W[0,0]", positive=True) and positive[0, 0] != real[0, 0]
    assert symbol_array("b", (), real=True)[()] == sp.Symbol("b", real=True)


def test_entrywise_functions_build_what_the_op_table_builds() -> None:
    """engines/entrywise: every element-wise function and derivative of the op table, and a declared generic f,
    give the op table's own expression (equal arguments, in order) on symbols of either assumption set (by a
    renamed template), expressions and numbers, also when asked again (kept values)."""
    from backpropcheck.engines.entrywise import elementwise_arrays
    from backpropcheck.lang.ops import ELEMENTWISE, Elementwise
    from backpropcheck.lang.ops.elementwise import _ew_symbolic

    a = np.array([sp.Symbol("z[0]", real=True), sp.Symbol("p[1]", positive=True), sp.Symbol("∇h[2]", real=True),
                  x * y - 1, sp.Rational(1, 3), sp.Integer(2), 0], dtype=object)
    functions = list(ELEMENTWISE.values()) + [Elementwise("f", None, None, generic("f"))]  # type: ignore[arg-type]
    for fn in functions:
        for prime in (False, True):
            if prime and fn.name == "sign":
                continue
            for _ in range(2):
                got, want = elementwise_arrays(a, fn, prime), _ew_symbolic(a, fn, prime)
                for g, w in zip(got, want):
                    assert g == w and getattr(g, "args", ()) == getattr(w, "args", ()), (fn.name, prime, g, w)


def test_steps_by_template_are_the_steps_sympy_builds() -> None:
    """engines/partials.by_template: a mask's step against a window's max (or min), evaluated once per shape and
    renamed, is the very expression ``Step(u)`` builds (its arg-max indicator), for windows whose names sort
    in every order against the entry's, and for more symbols than placeholders."""
    from backpropcheck.engines.partials import by_template
    from backpropcheck.lang.symfuncs import MaxOf, MinOf, Step

    rng = random.Random(4)
    names = ["x[0,0]", "x[0,1]", "x[1,0]", "x[1,1]", "x[0,10]", "a", "∇m[0]", "Z[2]", "x[3,2]"]
    for _ in range(60):
        window = [sp.Symbol(n, real=True) for n in rng.sample(names, rng.choice([2, 3, 4, 9]))]
        entry = rng.choice(window)
        extreme = rng.choice([MaxOf, MinOf])(*window)
        for u in (entry - extreme, extreme - entry, 2 * entry - 2 * extreme, entry - extreme + window[0] * 0 + 1):
            got, want = by_template(Step, u), Step(u)
            assert got == want and got.args == want.args, (u, got, want)


def test_diff1_is_sympy_diff_as_built() -> None:
    """engines/partials.diff1 (SymPy's own rules without Derivative's dispatch) builds what ``e.diff(s)`` builds,
    argument by argument: random sums, products, quotients, powers, exp and tanh, our functions (masks, max,
    clip, relu, a declared f), a symbolic exponent, and a function it leaves to ``diff`` (Abs)."""
    from backpropcheck.engines.partials import diff1
    from backpropcheck.lang.symfuncs import Clip, MaxOf, Relu, Step

    rng = random.Random(21)
    f = generic("f")
    p = sp.Symbol("p", positive=True)
    extra = [MaxOf(x, y * z, 2 * x) * Step(x - y), Clip(x * y, -1, 1) ** 2, Relu(x - z) * f(y * x), x ** (y * p),
             sp.log(p + x ** 2) / (1 + sp.exp(-z)), sp.Abs(x) * y, sp.erf(x * y) + sp.atan(z / p), f(x) ** -2]
    for e in [random_sympy_expr(rng, 4) for _ in range(40)] + extra:
        for s in (x, y, z, p):
            got, want = diff1(e, s), e.diff(s)
            assert got == want and got.args == want.args, (e, s, got, want)


def test_symbol_arrays_are_made_once_and_handed_out_as_copies() -> None:
    """symbol_array keeps the arrays it made: the same symbols again (the very objects), in an array of the
    caller's own, which the caller may write (the sweep zeroes gradient atoms) without changing the next one."""
    from backpropcheck.engines.symbolic import symbol_array

    first = symbol_array("q", (2, 3), real=True)
    first[0, 0] = sp.Integer(0)
    again = symbol_array("q", (2, 3), real=True)
    assert again[0, 0] == sp.Symbol("q[0,0]", real=True) and again is not first
    assert all(a is b for a, b in zip(again.flat[1:], first.flat[1:]))
    positive = symbol_array("q", (2, 3), positive=True)
    assert positive[0, 1].is_positive and positive[0, 1] != again[0, 1]


def test_comparisons_build_what_the_op_table_builds() -> None:
    """engines/entrywise.COMPARISONS (steps by template): the op table's masks, expression for expression, for
    symbols against numbers, against each other, against a window's max (the arg-max indicator) and for
    expressions, broadcast."""
    from backpropcheck.engines.entrywise import COMPARISONS
    from backpropcheck.lang.ops import OPS
    from backpropcheck.lang.symfuncs import MaxOf

    w = [sp.Symbol(f"x[{i}]", real=True) for i in range(4)]
    a = np.array(w + [x * y - 1, sp.Integer(3)], dtype=object)
    b = np.array([MaxOf(*w), w[2], sp.Integer(0), sp.Rational(1, 2), MaxOf(*w), z], dtype=object)
    for name, fast in COMPARISONS.items():
        for left, right in ((a, b), (b, a), (a[:, None], b[None, :3])):
            got, want = fast(left, right), OPS[name].symbolic(left, right)
            assert got.shape == want.shape
            assert all(g == v and g.args == v.args for g, v in zip(got.flat, want.flat)), name


def test_a_product_keeps_the_order_of_non_commutative_factors() -> None:
    # found in review: with the symbol on the right, mul's fast paths fell back to y * x
    from backpropcheck.engines.products import mul

    A, B = sp.symbols("A B", commutative=False)
    for x, y in ((2 * A, B), (sp.exp(A), B), (A * B, A), (B, A * B), (A, B)):
        assert mul(x, y) == x * y, (x, y)


def test_partials_of_terms_with_a_dummy_or_two_symbols_of_one_name_are_sympys() -> None:
    # found in review: a Dummy (or a name shared by two symbols) renamed to a plain placeholder changed
    # SymPy's order, and the renamed-back partial came back with its arguments out of order
    x, y = sp.symbols("x y", real=True)
    d = sp.Dummy("d", real=True)
    x2 = sp.Symbol("x", positive=True)  # the same name as x, other assumptions
    for term, s in ((y**2 * sp.sqrt(d) * x**3, y), (y**2 * sp.sqrt(x2) * x**3, y), (x * x2 * y**2, x),
                    (sp.sqrt(d) * sp.exp(x) * y**2, y)):
        got = partials(term, {s})[s]
        want = sp.diff(term, s)
        assert got == want and got.args == want.args, (term, got, want)


def test_memoised_products_and_sums_are_the_ones_built_afresh(monkeypatch) -> None:
    """engines/products: a repeated ``mul``/``add`` of the same argument objects returns the expression built the
    first time, equal (arguments and all) to what SymPy builds; an equal argument that is another object is
    built on its own; the memo stays within its bound; one term is the sum itself."""
    from backpropcheck.engines import products
    from backpropcheck.engines.products import add, mul

    rng = random.Random(23)
    symbols = [sp.Symbol(f"m[{i}]", real=True) for i in range(4)] + [sp.Symbol("∇m[0]", real=True)]
    pool = symbols + [sp.Integer(0), sp.Integer(2), sp.Rational(1, 3), symbols[0] * symbols[1],
                      symbols[2] + symbols[3], sp.tanh(symbols[0])] + [random_sympy_expr(rng, 2) for _ in range(8)]
    for a in pool:
        for b in pool:
            first = mul(a, b)
            assert mul(a, b) is first and first == a * b and first.args == (a * b).args
    for _ in range(100):
        terms = [rng.choice(pool) for _ in range(rng.randint(0, 6))]
        first = add(*terms)
        assert add(*terms) is first and first == sp.Add(*terms) and first.args == sp.Add(*terms).args
        assert add(*[t for t in terms]) is first  # the same objects in another tuple: the same entry
    for a in symbols:  # two symbols either way round: the one product SymPy builds
        for b in symbols:
            assert mul(b, a) is mul(a, b) and mul(b, a).args == (b * a).args
    twin = sp.Symbol.__xnew__(sp.Symbol, "m[0]", real=True)  # equal to symbols[0], another object
    assert mul(twin, symbols[1]) == mul(symbols[0], symbols[1])
    monkeypatch.setattr(products, "_MEMO_LIMIT", 5)
    products._PRODUCTS.clear()
    products._SUMS.clear()
    for a in symbols:
        for b in symbols:
            assert mul(a, b) == a * b and add(a, b, a * b) == a + b + a * b
    assert len(products._PRODUCTS) <= 5 and len(products._SUMS) <= 5
    for single in (symbols[0], symbols[0] * symbols[1], symbols[2] + symbols[3], sp.Integer(0), sp.Integer(3)):
        assert add(single) is single


def test_sums_over_several_indices_at_once_are_the_sums_one_index_at_a_time(monkeypatch) -> None:
    """engines/evaluate: a symbolic ``sum(... for c in C for p in K)`` summed over all its axes at once is the
    expression the sums one axis after another build (equal, same arguments in order): distinct products
    (summed at once), like terms and coefficients (SymPy's sum, one axis at a time), a body constant along an
    axis (times its count), three nested sums, and a sum of sums inside another expression."""
    from conftest import derivation_toml

    from backpropcheck.engines import evaluate
    from backpropcheck.engines.evaluate import evaluate_definition
    from backpropcheck.engines.symbolic import symbol_array, symbolic_backend

    text = derivation_toml(
        dims={"C": "c", "K": "k", "F": "f", "U": "u"},
        inputs={"w": ["F", "C", "K"], "x": ["C", "U + K - 1"], "a": ["K"], "q": ["C", "K", "K"]},
        forward={"conv[f, u]": "sum(w[f, c, p] * x[c, u + p] for c in C for p in K)",
                 "alike[f]": "sum(a[p] * a[r] for p in K for r in K) + w[f, 0, 0]",
                 "scaled[f]": "sum(2 * w[f, c, p] for c in C for p in K)",
                 "constant[f]": "sum(a[p] for c in C for p in K) * w[f, 0, 0]",
                 "three[u]": "sum(q[c, p, r] * x[c, u + p] * a[r] for c in C for p in K for r in K)",
                 "out": "sum(conv) + sum(alike) + sum(scaled) + sum(constant) + sum(three)"},
        loss={"upstream": "out"}, claims={"grad_w": "grad_out * ones_like(w)"})
    d = load_text(text)
    sizes = {"C": 2, "K": 3, "F": 2, "U": 2}
    env = {name: symbol_array(name, tuple(dim.value(sizes) for dim in d.shape_of(name)), real=True)
           for name in d.inputs}
    backend = symbolic_backend(d)
    assert any(evaluate._nested_sums(f.root) for f in d.forward if f.index is not None)

    def values() -> list[np.ndarray]:
        return [evaluate_definition(f.root, f.index, env, sizes, backend) for f in d.forward if f.index is not None]

    at_once = values()
    monkeypatch.setattr(evaluate, "_nested_sums", lambda root: frozenset())
    one_at_a_time = values()
    for got, want in zip(at_once, one_at_a_time):
        assert got.shape == want.shape
        for g, w in zip(got.flat, want.flat):
            assert g == w and g.args == w.args, (g, w)
    conv = at_once[0]
    assert conv[1, 0] == sum(env["w"][1, c, p] * env["x"][c, p] for c in range(2) for p in range(3))


def test_gradient_atoms_in_an_expression_are_its_free_gradient_atoms() -> None:
    """SymbolicTruth._gradient_atoms_in (memoised per sub-expression): the gradient atoms among ``free_symbols``,
    for the truth's steps and expanded adjoints, random expressions over its atoms, and a bound variable."""
    d = load_text(DENSE_COLUMN)
    truth = SymbolicTruth(d, {"n": 3, "m": 2})
    atoms = list(truth.grad_atoms) + list(truth.local)
    assert atoms and truth.grad_atoms
    rng = random.Random(31)
    exprs = [e for arr in truth.steps.values() for e in arr.flat] + [e for arr in truth.grads.values() for e in arr.flat]
    for _ in range(40):
        picked = rng.sample(atoms, 3)
        exprs.append(sp.tanh(picked[0] * picked[1]) - sp.exp(picked[2]) / (1 + picked[0] ** 2))
    g = next(iter(truth.grad_atoms))
    exprs.append(sp.Lambda(g, g * x) + g)  # g bound inside the Lambda, free outside it
    exprs.append(sp.Lambda(g, g * x))
    for e in exprs:
        e = sp.sympify(e)
        assert truth._gradient_atoms_in(e) == {s for s in e.free_symbols if s in truth.grad_atoms}, e
        assert truth._forward_atoms_in(e) == {s for s in e.free_symbols if s in truth.local}, e
        for limit in (0, 1, 2, 4, 16):  # the memoised reach is the plain search over free_symbols
            assert truth._reach_is_small(e, limit) == _reach_by_free_symbols(truth, e, limit), (e, limit)


def _reach_by_free_symbols(truth: SymbolicTruth, e: sp.Expr, limit: int) -> bool:
    """How many forward atoms lie below ``e``, by ``free_symbols`` at every step: at most ``limit``?"""
    seen: set = set()
    todo = [s for s in e.free_symbols if s in truth.local]
    while todo:
        s = todo.pop()
        if s not in seen:
            seen.add(s)
            todo.extend(t for t in truth.local[s].free_symbols if t in truth.local)
    return len(seen) <= limit


def test_a_difference_over_few_atoms_is_decided_by_the_exact_test_before_any_witness(tmp_path, monkeypatch) -> None:
    """attention.toml's grad_S needs the softmax's definition (no identity over the atoms): with few atoms
    below, the exact test over the inputs proves it, and the 60-digit witness search (made for a difference
    too large to expand) never runs. Off by 1e-13 · P, below any tolerance, the same claim is refuted by it."""
    from backpropcheck.engines.witness import WitnessSearch

    searched = []
    original = WitnessSearch.layered_witness

    def spy(self, e, rng, tries=2):
        searched.append(e)
        return original(self, e, rng, tries)

    monkeypatch.setattr(WitnessSearch, "layered_witness", spy)
    text = (REPO / "derivations" / "attention.toml").read_text()
    path = tmp_path / "attention.toml"
    path.write_text(text)
    claims = {c.name: c for c in check_path(str(path), Options(trials=2)).claims}
    assert claims["grad_S"].verdict == "proved" and searched == []
    path.write_text(text.replace('grad_S = "P * (grad_P - D[:, None])"', 'grad_S = "P * (grad_P - D[:, None]) + 1e-13 * P"'))
    claims = {c.name: c for c in check_path(str(path), Options(trials=2)).claims}
    assert claims["grad_S"].verdict == "refuted" and "exact difference" in claims["grad_S"].message
    assert searched


def test_a_kink_point_of_a_simplex_entry_stays_on_the_simplex() -> None:
    """Moving one free entry of a simplex column near 1 shrinks the others: every entry, the last (one minus
    the free ones) included, stays positive."""
    from backpropcheck.engines.witness import WitnessSearch

    search = WitnessSearch.__new__(WitnessSearch)
    entries = sp.symbols("a b c", positive=True)
    search.columns = [list(entries)]
    rng = random.Random(0)
    for _ in range(200):
        weights = [rng.randint(1, 1000) for _ in range(4)]
        point = {s: sp.Rational(w, sum(weights)) for s, w in zip(entries, weights)}
        moved = search._on_simplex({**point, entries[0]: sp.Rational(rng.randint(1, 999), 1000)}, entries[0])
        assert all(v > 0 for v in moved.values()) and sum(moved.values()) < 1, moved


def _with_extras(rng: random.Random, depth: int) -> sp.Expr:
    """random_sympy_expr, with the terms exp's, log's and tanh's evals do rewrite: a log, a float, pi, I."""
    e = random_sympy_expr(rng, depth)
    extra = rng.randrange(6)
    if extra == 0:
        return e + sp.log(x ** 2 + 1)
    if extra == 1:
        return e + sp.Float(1.5)
    if extra == 2:
        return e - 3 * sp.log(y ** 2 + 2)
    if extra == 3:
        return e + sp.pi * sp.I
    return e


@pytest.mark.parametrize("fn", [sp.exp, sp.log, sp.tanh])
def test_applied_builds_the_very_expression_sympy_builds(fn) -> None:
    """symfuncs.applied skips exp's, log's and tanh's eval only where it returns the node unchanged: on 400
    random arguments (sums, products, functions; a log, a float, pi·I, a sign to extract) the result is the
    same expression, of the same hash, as SymPy's own fn(u), with or without the rewrite."""
    from backpropcheck.lang.symfuncs import applied

    rng = random.Random(7)
    skipped = 0
    for _ in range(400):
        u = _with_extras(rng, rng.randint(1, 4))
        for arg in (u, -u):
            got, want = applied(fn, arg), fn(arg)
            assert got == want and hash(got) == hash(want), (fn, arg, got, want)
            skipped += arg.is_Add and not arg.has(sp.log, sp.I, sp.pi)
    assert skipped > 100  # the fast path was taken, and agreed


def test_a_layer_norm_gradient_is_decided_with_the_mean_written_out_and_the_variance_left_an_atom() -> None:
    """grad_X of a layer norm equals its one-step truth once xhat and mu are written as their definitions
    (mean(X - mu) = 0 along the row); var, read only under the square root, stays an atom. Expanding var
    first (the latest variable) put a 15-term polynomial under every root, four times the work."""
    d = load(REPO / "derivations" / "layer_norm.toml")
    truth = SymbolicTruth(d, {"B": 3, "d": 4})
    claim = next(c for c in d.claims if c.name == "grad_X")
    assert not truth.step_zero(claim.node, claim.target, claim.index)
    assert truth.chain_zero(claim.node, claim.target, claim.index)
    position = {name: k for k, (name, _) in enumerate(truth.order)}
    tried = set(truth._peeled)
    assert frozenset({position["xhat"], position["mu"]}) in tried
    assert all(position["var"] not in expanded for expanded in tried)
    # the same claim with the variance's path dropped is refuted by the same test
    wrong = load_text((REPO / "derivations" / "layer_norm.toml").read_text().replace(
        " - xhat * mean(grad_xhat * xhat, axis=1, keepdims=True))", ")"))
    truth = SymbolicTruth(wrong, {"B": 3, "d": 4})
    claim = next(c for c in wrong.claims if c.name == "grad_X")
    assert not truth.chain_zero(claim.node, claim.target, claim.index)


@pytest.mark.parametrize("assumptions", [{"real": True}, {"positive": True}])
def test_symbol_array_makes_the_symbols_sympy_makes(assumptions) -> None:
    """Each entry is made from one symbol of the same assumptions (their deduced facts shared, as SymPy shares
    them while its cache holds them): equal to SymPy's own symbol, of the same hash and the same facts."""
    from backpropcheck.engines import symbolic

    assert symbolic._symbol_like is symbolic._new_symbol_like  # this SymPy: the fast route is the one in use
    made = symbolic.symbol_array("⟨test⟩", (2, 3), **assumptions)
    for idx in np.ndindex(2, 3):
        want = sp.Symbol(f"⟨test⟩[{idx[0]},{idx[1]}]", **assumptions)
        got = made[idx]
        assert got == want and hash(got) == hash(want) and got.assumptions0 == want.assumptions0
        assert (got.is_real, got.is_positive, got.is_zero, got.is_finite) == \
            (want.is_real, want.is_positive, want.is_zero, want.is_finite)
        assert sp.expand((got + want) ** 2) == 4 * want ** 2  # one symbol to SymPy's arithmetic
