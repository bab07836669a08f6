"""Concrete draws of the discrete domains for a per-neuron truth: one-hot labels, ``index`` and
``binary`` inputs are numbers at each dim assignment, drawn as the numeric trials draw them."""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np
import sympy as sp

from ..model import Derivation


def draw_onehot(inp, shape: tuple[int, ...], seed: int, name: str, sizes: Mapping[str, int]) -> np.ndarray:
    """One one-hot label for these dims, drawn as the numeric trials draw it (seeded by the dims)."""
    from .numeric import sample_input

    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), *sorted(sizes.values())])
    return sample_input(inp, shape, rng).astype(int)


def integer_array(values: np.ndarray) -> np.ndarray:
    out = np.empty(values.shape, dtype=object)
    for idx in np.ndindex(*values.shape):
        out[idx] = sp.Integer(int(values[idx]))
    return out


def concrete_inputs(d: Derivation, sizes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """``index`` inputs (integers, with a repeat) and ``binary`` ones (0/1) as concrete integer
    arrays, drawn once per dim assignment (SPEC §6.1): ``C[I]`` then reads concrete rows."""
    from .numeric import draw_integers

    out = {}
    for name, inp in d.inputs.items():
        if inp.domain not in ("index", "binary"):
            continue
        shape = tuple(dim.value(sizes) for dim in inp.shape)
        rng = np.random.default_rng([zlib.crc32(name.encode()), *sorted(sizes.values()), len(sizes)])
        high = inp.range.value(sizes) if inp.domain == "index" and inp.range is not None else 2
        out[name] = draw_integers(shape, high, rng) if inp.domain == "index" else rng.integers(0, 2, size=shape)
    return out
