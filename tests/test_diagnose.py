"""The catalogue of named mistakes, on small derivations the checker refutes."""

from __future__ import annotations

from pathlib import Path

from conftest import check_text, derivation_toml

from backpropcheck.checker import Options


def _layer(claims: dict[str, str]) -> str:
    return derivation_toml(
        dims={"n": "inputs", "m": "outputs"}, inputs={"a": ["n"], "W": ["m", "n"], "b": ["m"]},
        forward={"z": "W @ a + b", "h": "tanh(z)"}, loss={"upstream": "h"}, claims=claims,
    )


def _diagnoses(tmp_path: Path, claims: dict[str, str]) -> dict[str, str | None]:
    result = check_text(tmp_path, _layer(claims))
    assert all(c.verdict == "refuted" for c in result.claims), [c.message for c in result.claims]
    return {c.name: c.diagnosis for c in result.claims}


def test_grad_h_where_grad_z_belongs_names_the_missing_derivative(tmp_path: Path) -> None:
    found = _diagnoses(tmp_path, {"grad_W": "outer(grad_h, a)", "grad_a": "W.T @ grad_h"})
    for name in ("grad_W", "grad_a"):
        assert found[name] is not None
        assert "grad_h used where grad_z belongs" in found[name]
        assert "tanh_prime(z)" in found[name]


def test_a_right_step_with_a_wrong_sign_is_not_called_a_swapped_gradient(tmp_path: Path) -> None:
    found = _diagnoses(tmp_path, {"grad_W": "-outer(grad_z, a)"})
    assert found["grad_W"] is not None and found["grad_W"].startswith("wrong sign")


def test_reproduce_command_carries_shapes(tmp_path: Path) -> None:
    result = check_text(tmp_path, _layer({"grad_a": "2 * W.T @ grad_z"}), Options(trials=2, shapes=1))
    cex = result.claims[0].counterexample
    assert cex is not None
    assert "--shapes 1" in cex.command and "--trials 2" in cex.command
