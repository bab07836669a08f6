"""backpropcheck: prove or refute matrix-form backpropagation against the per-neuron chain rule.

The Python API (see the README and :mod:`backpropcheck.api`)::

    import backpropcheck as bpc
    report = bpc.check("derivations/dense_column.toml")   # a file, folder, note or TOML text
    report.ok, report.claim("grad_W").verdict
    print(bpc.explain("derivations/dense_column.toml", claim="grad_a"))
    print(bpc.derive("derivations/dense_column.toml"))     # the matrix form, written and proved

Everything is imported on first use, so ``backpropcheck --version`` (and ``import
backpropcheck``) load neither NumPy nor SymPy.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "check", "explain", "derive", "Report", "Explanation", "FileResult", "ClaimResult", "Counterexample",
           "Options", "Limits", "DerivationError"]


def __getattr__(name: str):
    """The API, imported on first use (no importlib, no getattr by name: see tests/test_hostile.py)."""
    if name == "explain":  # the submodule backpropcheck.explain is itself callable as the API function
        from .explain import explain_derivation  # noqa: F401 - importing the submodule sets it here

        return globals()["explain"]
    if name == "derive":  # likewise: the submodule backpropcheck.derive is callable as derive(...)
        from .derive import DeriveResult  # noqa: F401 - importing the submodule sets it here

        return globals()["derive"]
    if name in ("check", "Report", "Explanation"):
        from . import api

        value = {"check": api.check, "Report": api.Report, "Explanation": api.Explanation}[name]
    elif name in ("FileResult", "ClaimResult", "Counterexample", "Options"):
        from . import checker

        value = {"FileResult": checker.FileResult, "ClaimResult": checker.ClaimResult,
                 "Counterexample": checker.Counterexample, "Options": checker.Options}[name]
    elif name == "Limits":
        from .limits import Limits as value
    elif name == "DerivationError":
        from .errors import DerivationError as value
    else:
        raise AttributeError(f"module 'backpropcheck' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
