"""Thread policy: set before torch by every entry point, overridable by the user's environment."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENTRY_POINTS = sorted(
    [p for p in REPO.glob("*/__main__.py")] + [p for p in REPO.glob("*/*/__main__.py")]
    + [p for p in (REPO / "experiments").glob("*.py") if '__name__ == "__main__"' in p.read_text()]
)  # fmt: skip


def _policy(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    env.update(env_extra, PYTHONPATH=str(REPO))
    code = "import condense.threads, os, torch; print(os.environ['OMP_WAIT_POLICY'], os.environ['KMP_BLOCKTIME'])"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_passive_by_default_and_the_users_setting_wins():
    assert _policy({}) == "PASSIVE 0"
    assert _policy({"OMP_WAIT_POLICY": "ACTIVE", "KMP_BLOCKTIME": "200"}) == "ACTIVE 200"


@pytest.mark.parametrize("path", ENTRY_POINTS, ids=lambda p: str(p.relative_to(REPO)))
def test_entry_point_imports_the_policy_before_anything_else(path):
    tree = ast.parse(path.read_text())
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) and getattr(n, "module", None) != "__future__"]
    first = imports[0]
    assert isinstance(first, ast.Import) and first.names[0].name == "condense.threads", (
        f"{path.name}: the first import must be `import condense.threads` (before torch is loaded)"
    )
