"""The bundled derivations (shipped inside the package) and the template that ``new`` writes.

Light on purpose: importing this module imports neither NumPy nor SymPy.
"""

from __future__ import annotations

import atexit
import contextlib
from collections.abc import Iterator
from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path

SEED_EXAMPLE = "dense_column.toml"
INDEX_EXAMPLE = "dense_index_convention.toml"
SQUARE_MISTAKE = "mistakes/missing_transpose_square.toml"


def bundled() -> Traversable:
    """``backpropcheck/derivations`` inside the installed package."""
    return files("backpropcheck") / "derivations"


@contextlib.contextmanager
def bundled_path() -> Iterator[Path]:
    """A real folder holding the bundled derivations (extracted if the package is zipped)."""
    with as_file(bundled()) as path:
        yield Path(path)


_EXTRACTED = contextlib.ExitStack()
atexit.register(_EXTRACTED.close)


def bundled_folder() -> str:
    """The bundled folder as a filesystem path for ``check --examples`` (extracted once if zipped)."""
    node = bundled()
    if isinstance(node, Path):
        return str(node)
    return str(_EXTRACTED.enter_context(as_file(node)))


def bundled_files() -> list[tuple[str, Traversable]]:
    """Every bundled ``*.toml`` as (path relative to the folder, resource), sorted, recursively."""
    out: list[tuple[str, Traversable]] = []

    def visit(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                visit(child, f"{prefix}{child.name}/")
            elif child.name.endswith(".toml"):
                out.append((prefix + child.name, child))

    visit(bundled(), "")
    return sorted(out, key=lambda item: (item[0].count("/"), item[0]))


def bundled_text(relative: str) -> str | None:
    """The text of one bundled derivation, or None when it is not shipped."""
    node = bundled()
    for part in relative.split("/"):
        node = node / part
    return node.read_text(encoding="utf-8") if node.is_file() else None


TEMPLATE = '''\
# A backpropcheck derivation: `backpropcheck check THIS_FILE` proves or refutes every claim.
# Every table and key is checked: a typo is an error, never silently ignored.

[derivation]
title = "One dense layer with tanh and a squared-error loss"
summary = "Edit the forward pass, the loss and the claims; keep the claims you can derive by hand."

[dims]
# Dimension names. Each is drawn at random per trial (distinct from each other), so a
# transposed formula cannot pass by a square coincidence.
n = "inputs"
m = "outputs"

[inputs]
# Leaf tensors: name = shape (a list of dim names; [] is a scalar). Column vectors are 1-D.
x = ["n"]
W = ["m", "n"]
b = ["m"]
y = { shape = ["m"], constant = true }     # a target: constants get no gradient

[forward]
# Ordered definitions in NumPy-like matrix form (or index form: "z[j]" = "sum(W[j, i] * x[i] for i in n) + b[j]").
z = "W @ x + b"
h = "tanh(z)"

[loss]
# Either a scalar E = "...", or upstream = "h" when E is unknown and grad_h is given.
E = "sum((h - y) ** 2) / 2"

[claims]
# grad_X has X's own shape: grad_X[idx] = dE/dX[idx]. A claim may use other gradients;
# they are bound to their true values, so each claim is judged on its own step.
grad_h = "h - y"
grad_z = "grad_h * (1 - h ** 2)"          # tanh acts entry by entry: an element-wise product
grad_W = "outer(grad_z, x)"               # one block x.T per row: an outer product
grad_b = "grad_z"
grad_x = "W.T @ grad_z"                   # the gradient takes the transposed Jacobian

# [expect]
# grad_x = "refuted"                      # mark a claim you know is wrong (like pytest's xfail)

# [check]
# seed = 0
# trials = 20
'''


NOTE = """\
# One dense layer

Prose around the derivation is yours. `backpropcheck check THIS_NOTE` checks every fenced block
whose info string is `toml backpropcheck` exactly like a derivation file, and names errors by
this note's own line numbers; other blocks and the prose are left alone.

```toml backpropcheck
{template}```
"""


def template_for(path: str | Path) -> str:
    """What ``new`` writes to ``path``: the template, or for a Markdown note (which check reads only
    through its ``toml backpropcheck`` blocks) a short note holding the template in such a block."""
    from .notes import is_note

    return NOTE.format(template=TEMPLATE) if is_note(path) else TEMPLATE
