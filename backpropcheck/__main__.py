"""``python -m backpropcheck`` is the same program as ``backpropcheck``."""

from .cli import main

main(prog_name="backpropcheck")
