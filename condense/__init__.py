"""Image dataset distillation: shared core (data, nets, DSA, unroll, evaluation, artifacts) and methods."""
__version__ = "0.1.0"
