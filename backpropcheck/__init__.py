"""backpropcheck: prove or refute matrix-form backpropagation against the per-neuron chain rule.

The Python API (see the README and :mod:`backpropcheck.api`)::

    import backpropcheck as bpc
    report = bpc.check("derivations/dense_column.toml")   # a file, folder, note or TOML text
    report.ok, report.claim("grad_W").verdict
    print(bpc.explain("derivations/dense_column.toml", claim="grad_a"))

Everything is imported on first use, so ``backpropcheck --version`` (and ``import
backpropcheck``) load neither NumPy nor SymPy.
"""

__version__ = "0.1.0"

# name → the submodule that defines it (derive, SPEC §7, joins here when it lands)
_LAZY = {
    "check": "api", "explain": "api", "Report": "api", "Explanation": "api",
    "FileResult": "checker", "ClaimResult": "checker", "Counterexample": "checker", "Options": "checker",
    "Limits": "limits", "DerivationError": "errors",
}

__all__ = ["__version__", "check", "explain", "Report", "Explanation", "FileResult", "ClaimResult", "Counterexample",
           "Options", "Limits", "DerivationError"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'backpropcheck' has no attribute {name!r}")
    import importlib

    if name == "explain":  # the submodule backpropcheck.explain is itself callable as the API function
        return importlib.import_module(".explain", __name__)
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
