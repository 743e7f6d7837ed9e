"""Fixtures of the preprocessing tests: one two-node Ray cluster for the whole session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    """A real two-node Ray cluster on this machine (a head and a worker raylet, one CPU each,
    each in its own processes; ``ray.cluster_utils.Cluster``), this process connected to it
    as a driver; started once (~15 s) and shut down at the end. Drivers in other processes
    join it at ``ray.get_runtime_context().gcs_address``."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        yield ray
        return
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()
        cluster.shutdown()
