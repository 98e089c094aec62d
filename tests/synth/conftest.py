"""Shared fixtures: the embedded digits data and two small trained teachers (session scope, a few seconds)."""
import pytest
import torch

from condense.data import load_dataset
from synth.teachers import train_teacher


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


def _small_teacher(digits, norm):
    with torch.random.fork_rng(devices=[]):
        return train_teacher(digits, "lenet5", arch_kwargs={"norm": norm}, epochs=10, lr=3e-3, batch_size=64, progress=False)


@pytest.fixture(scope="session")
def teacher(digits):
    """LeNet-5 with BatchNorm on 8x8 digits (BN so that the meta-generator's BN loss applies)."""
    return _small_teacher(digits, "batchnorm")


@pytest.fixture(scope="session")
def plain_teacher(digits):
    """LeNet-5 without BatchNorm, the DAFL / DFAD / ZSKT papers' teacher."""
    return _small_teacher(digits, "none")
