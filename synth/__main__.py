"""``python -m synth``: see :mod:`synth.cli`."""
from .cli import main

raise SystemExit(main())
