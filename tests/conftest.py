"""Shared fixtures: the offline ``shared/data`` directory and a writable copy of parts of it."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

# Small models run fastest single-threaded, and multi-threaded BLAS/OpenMP degrades badly when the
# machine is shared (measured here: 10-1000x slower under load). Override with CONDENSE_TEST_THREADS.
_THREADS = os.environ.get("CONDENSE_TEST_THREADS", "1")
torch.set_num_threads(int(_THREADS))
os.environ.setdefault("OMP_NUM_THREADS", _THREADS)  # inherited by the CLI subprocesses the tests start

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _private_user_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The commands' default caches (resumable state, trained networks) go to a directory of this test
    run, never the user's ``~/.cache``: tests stay hermetic and one run cannot resume another's work."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))


def device_under_test() -> torch.device:
    """``$CONDENSE_TEST_DEVICE`` (default ``cpu``; e.g. ``cuda``) - the device of the tests that take one."""
    from condense.utils import UserError, resolve_device

    name = os.environ.get("CONDENSE_TEST_DEVICE", "cpu")
    try:
        return resolve_device(name)
    except UserError as exc:
        raise pytest.UsageError(f"CONDENSE_TEST_DEVICE={name!r}: {exc}") from None


def pytest_configure(config: pytest.Config) -> None:
    device_under_test()  # a bad CONDENSE_TEST_DEVICE stops the run with one line, before any test


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device under test (:func:`device_under_test`); tests taking it run on a GPU with CONDENSE_TEST_DEVICE=cuda."""
    return device_under_test()


def shared_data_dir() -> Path | None:
    """``$CONDENSE_SHARED_DATA`` or ``../shared/data`` next to the checkout, if present."""
    env = os.environ.get("CONDENSE_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data", REPO / ".." / ".." / "shared" / "data"]:
        if cand.is_dir() and (cand / "README.md").exists():
            return cand.resolve()
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to the read-only shared datasets; skips the test with a reason when absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is not present on this machine (set CONDENSE_SHARED_DATA to point at it)")
    return path


@pytest.fixture(scope="session")
def writable_shared(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """Copy a sub-directory of shared data to a writable temp root (loaders write ``processed/``)."""
    cache: dict[str, Path] = {}

    def copy(sub: str) -> Path:
        if sub not in cache:
            src = shared_data / sub
            if not src.exists():
                pytest.skip(f"shared data has no {sub!r}")
            dst = tmp_path_factory.mktemp("shared") / sub
            shutil.copytree(src, dst)
            cache[sub] = dst
        return cache[sub]

    return copy
