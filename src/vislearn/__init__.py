"""vislearn: visual representation learning with few labels, on one Lightning engine."""

__version__ = "0.1.0"
