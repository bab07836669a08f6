"""``python -m backpropcheck`` is the same program as ``backpropcheck``."""

from .cli import run

if __name__ == "__main__":  # importing this module (pydoc, doctest collection) must not end the process
    run()
