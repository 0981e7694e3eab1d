"""Shared fixtures of the hashevict Python tests.

The tests import the *installed* package (pip install ./bindings/python);
``HASHEVICT_LIBRARY`` may point them at another build of the library.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

try:  # keep hypothesis' caches out of the caller's tree (no .hypothesis/ in the repo)
    from hypothesis.configuration import set_hypothesis_home_dir

    if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "hashevict-hypothesis"))
except ImportError:  # pragma: no cover - very old hypothesis
    pass

import hashevict

# Reproducible by default (CI); HYPOTHESIS_PROFILE=explore searches afresh.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,  # no .hypothesis/ directory in the caller's tree
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("explore", database=None, deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

HERE = Path(__file__).resolve().parent


def header_path() -> Path | None:
    """include/hashevict.h: $HASHEVICT_HEADER, else the repository's
    (bindings/python/tests/../../../include), else the packaged copy."""
    env = os.environ.get("HASHEVICT_HEADER")
    if env:
        return Path(env)
    repo = HERE.parents[2] / "include" / "hashevict.h"
    if repo.is_file():
        return repo
    packaged = Path(hashevict.__file__).parent / "include" / "hashevict.h"
    return packaged if packaged.is_file() else None


@pytest.fixture(scope="session")
def header_text() -> str:
    p = header_path()
    if p is None:
        pytest.skip("include/hashevict.h not found (set HASHEVICT_HEADER)")
    return p.read_text()


@pytest.fixture(scope="session")
def lib():
    return hashevict.library()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def randn(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


@pytest.fixture
def small_engine():
    with hashevict.Engine(n_layers=2, n_kv_heads=2, n_q_heads=4, head_dim=8, budget=16, n_sink=2, n_recent=3) as eng:
        yield eng


def torch_or_skip():
    try:
        import torch  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        pytest.skip(f"torch is not installed ({exc.__class__.__name__})")
    return sys.modules["torch"]
