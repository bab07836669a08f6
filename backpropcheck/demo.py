"""The classroom walk-through (``backpropcheck demo``) on the bundled seed example, step by step."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.markup import escape

from .checker import Options, check_derivation
from .explain.analysis import Analysis
from .explain.document import select
from .explain.printing import concrete_rename, render
from .explain.render import render_text
from .explain.walkthrough import explain_derivation
from .model import Derivation

if TYPE_CHECKING:
    from rich.console import Console

SIZES = {"n": 3, "m": 2}  # the seed layer's dims throughout the demo


def _demo_derivation(relative: str, replace: tuple[str, str] | None = None) -> Derivation | None:
    from .loader import loads
    from .templates import bundled_text

    text = bundled_text(relative)
    if text is None:
        return None
    if replace is not None:
        if replace[0] not in text:
            return None
        text = text.replace(replace[0], replace[1])
    return loads(text, relative)


def run_demo(console: Console, pause: Callable[[], None], options: Options | None = None) -> None:
    """The classroom walk-through on the bundled seed example, step by step."""
    from .templates import SEED_EXAMPLE

    opts = options or Options(trials=5, shapes=1, timeout=10.0)
    seed = _demo_derivation(SEED_EXAMPLE)
    if seed is None:
        raise FileNotFoundError(f"the bundled seed example {SEED_EXAMPLE} is missing from the package")
    steps = 7

    def step(k: int, title: str) -> None:
        if k > 1:
            pause()
        console.print()
        console.rule(f"[bold]Step {k}/{steps} — {escape(title)}")

    step(1, "the layer, in a derivation file")
    _the_layer(console, seed)
    full = explain_derivation(seed, None, SIZES, opts)
    step(2, "the per-neuron chain rule, entry by entry")
    render_text(select(full, "1", {"grad_z", "grad_a", "grad_W"}), console, header=False)
    step(3, "the Jacobian route: diagonal, transposed, outer")
    render_text(select(full, "2", {"grad_z", "grad_a", "grad_W"}), console, header=False)
    step(4, "stacking into matrix form, and the proof")
    render_text(select(full, "34"), console, header=False)
    step(5, "a wrong claim, refuted")
    _a_wrong_claim(console, opts)
    step(6, "the W[i, j] convention twist")
    _the_convention_twist(console, opts)
    step(7, "derived, not just checked")
    _derived(console, opts)
    console.print()
    console.print("Try it on your own derivation: backpropcheck new my_layer.toml, then backpropcheck explain "
                  "my_layer.toml and backpropcheck derive my_layer.toml.")


def _the_layer(console: Console, seed: Derivation) -> None:
    """Step 1: the seed file, and the scalar equations the symbolic engine reads off it."""
    from .templates import SEED_EXAMPLE, bundled_text

    console.print("The question: given ∇h = ∂E/∂h from the layers above, what are ∇z, ∇a, ∇W and ∇b in matrix "
                  "form? The bundled seed example writes the layer and four claimed answers:")
    console.print(escape(bundled_text(SEED_EXAMPLE) or ""), style="cyan", highlight=False)
    analysis = Analysis(seed, SIZES)
    console.print(f"Per neuron, at n={SIZES['n']}, m={SIZES['m']}, the forward pass is these scalar equations "
                  "(read off the file by the symbolic engine):")
    for atom, local in analysis.truth.local.items():
        m = render(local, concrete_rename)
        console.print("    " + escape(f"{concrete_rename(atom)[0]} = {m.text}"), style="green", highlight=False)


def _a_wrong_claim(console: Console, opts: Options) -> None:
    """Step 5: W instead of Wᵀ on a square layer, refuted by the values."""
    from .templates import SEED_EXAMPLE, SQUARE_MISTAKE

    wrong = _demo_derivation(SQUARE_MISTAKE)
    if wrong is None:  # build it from the seed: forget the transpose
        wrong = _demo_derivation(SEED_EXAMPLE, ('grad_a = "W.T @ grad_z"', 'grad_a = "W @ grad_z"'))
    console.print("A classic mistake: sending the delta back through W instead of Wᵀ. On a square layer the "
                  "shapes agree, so only the values can refute it:")
    if wrong is not None:
        render_text(select(explain_derivation(wrong, "grad_a", None, opts), "234"), console, header=False)


def _the_convention_twist(console: Console, opts: Options) -> None:
    """Step 6: the same layer with ``W[i, j]`` from input i to output j, and the column answer caught by shape."""
    from .templates import INDEX_EXAMPLE

    console.print(escape("Many notes write W[i, j] for the weight from input i to output j, so z_j = Σ_i W_ij a_i + "
                         "b_j, i.e. z = Wᵀ a + b. The same derivation from the file's own index form now gives W, "
                         "not Wᵀ:"))
    twist = _demo_derivation(INDEX_EXAMPLE)
    if twist is None:
        return
    render_text(select(explain_derivation(twist, None, SIZES, opts), "123", {"grad_a", "grad_W"}), console,
                header=False)
    swapped = _demo_derivation(INDEX_EXAMPLE, ('grad_a = "W @ grad_z"', 'grad_a = "W.T @ grad_z"'))
    if swapped is None:
        return
    result = next(r for r in check_derivation(swapped, opts).claims if r.name == "grad_a")
    console.print()
    console.print("Writing the column-convention answer W.T @ grad_z in this file is caught before any "
                  f"number is drawn — {result.verdict}:")
    console.print("    " + escape(result.message), style="red", highlight=False)


def _derived(console: Console, opts: Options) -> None:
    """Step 7: ``derive`` writes the matrix form from the forward pass alone."""
    from .derive import derive
    from .derive import render_text as render_derived
    from .templates import SEED_EXAMPLE, bundled_text

    console.print("backpropcheck can also write the matrix form itself, from the forward pass alone, and prove "
                  "what it wrote (backpropcheck derive):")
    seed_text = bundled_text(SEED_EXAMPLE)
    if seed_text is not None:
        render_derived(derive(seed_text, options=opts, name=SEED_EXAMPLE), console)
