"""backpropcheck: prove or refute matrix-form backpropagation against the per-neuron chain rule."""

__version__ = "0.1.0"
