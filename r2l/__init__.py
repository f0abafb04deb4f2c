"""r2l: R2L (distilling a NeRF teacher into a deep residual-MLP neural light field) as a library."""

__version__ = "0.1.0"
