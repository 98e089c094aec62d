"""Synthetic-data teachers: generator KD (DAFL, DFAD, ZSKT), meta-learned generators, HARD, random teachers."""
