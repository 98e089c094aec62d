"""Reproduction runs: ``python -m experiments.<name>``; results are written to ``experiments/results/``."""
