"""``python -m backpropcheck`` is the same program as ``backpropcheck``."""

from .cli import run

run()
