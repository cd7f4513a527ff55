"""Shared fixtures: the golden vectors (quarter width in the repo, full width from ../shared)."""

import os

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(REPO, "tests", "data", "golden")
SHARED_GOLDEN = os.path.join(os.path.dirname(REPO), "shared", "golden")


def pytest_collection_modifyitems(items):
    """The tests marked `long` first: pytest-xdist hands tests out in this order (after the
    xdist_group units), so the longest start early instead of running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def golden_path(name: str) -> str:
    return os.path.join(GOLDEN, name)


def shared_golden_path(name: str) -> str:
    path = os.path.join(SHARED_GOLDEN, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} not present (only in the development checkout)")
    return path


def flop_table(source: str, target, config, source_seconds: float, min_keep: float,
               round_to: int, narrowest_seconds: float | None = None) -> str:
    """A latency table for this machine whose entries are proportional to each conv's FLOPs
    and whose source model (`config`) takes `source_seconds` (a deterministic search, no
    timing of the convolutions), and its narrowest plan `narrowest_seconds` (default: in
    proportion to its FLOPs, as the table estimates it), written where deploy.prune looks
    for it."""
    from deploy.budget import narrowest_plan
    from deploy.latency_table import LatencyTable, default_table_path
    from deploy.pruning import model_groups

    table = LatencyTable(default_table_path(source, target), target, config, min_keep, round_to)
    for site in table.sites:
        for inputs in table._widths(site.inputs):
            for filters in table._widths(site.outputs):
                table.convs[table._key(site.spec, inputs, filters)] = \
                    site.area * inputs * filters * 1e-12
    table.models[table.plan_digest(config.plan)] = source_seconds
    narrowest = narrowest_plan(config.plan, model_groups(config), min_keep, round_to)
    if narrowest_seconds is None:  # where the table's FLOP-proportional estimate puts it
        narrowest_seconds = (source_seconds * table.conv_seconds(narrowest)
                             / table.conv_seconds(config.plan))
    table.models[table.plan_digest(narrowest)] = narrowest_seconds
    table._save()
    return table.path


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
