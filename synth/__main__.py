"""``python -m synth``: see :mod:`synth.cli`."""
import condense.threads  # noqa: F401  (thread policy before torch)
from .cli import main

raise SystemExit(main())
