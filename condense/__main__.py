"""``python -m condense``: see :mod:`condense.cli`."""
from .cli import main

raise SystemExit(main())
