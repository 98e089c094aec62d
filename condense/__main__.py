"""``python -m condense``: see :mod:`condense.cli`."""
import condense.threads  # noqa: F401  (thread policy before torch)
from .cli import main

raise SystemExit(main())
