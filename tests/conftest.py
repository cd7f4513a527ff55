"""Shared fixtures: the golden vectors (quarter width in the repo, full width from ../shared)."""

import os

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(REPO, "tests", "data", "golden")
SHARED_GOLDEN = os.path.join(os.path.dirname(REPO), "shared", "golden")


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def golden_path(name: str) -> str:
    return os.path.join(GOLDEN, name)


def shared_golden_path(name: str) -> str:
    path = os.path.join(SHARED_GOLDEN, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} not present (only in the development checkout)")
    return path


@pytest.fixture(scope="session")
def quarter_bn():
    from icnet.weights import load_npy_weights
    return (load_npy_weights(golden_path("icnet_quarter_bn_weights.npy")),
            np.load(golden_path("icnet_quarter_bn_io.npz")))


@pytest.fixture(scope="session")
def quarter_merged():
    from icnet.weights import load_npy_weights
    return (load_npy_weights(golden_path("icnet_quarter_merged_weights.npy")),
            np.load(golden_path("icnet_quarter_merged_io.npz")))
