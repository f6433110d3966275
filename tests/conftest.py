"""Shared fixtures. Ray starts once per test session: a real multi-node cluster simulated on
this machine with `ray.cluster_utils.Cluster` (every node on 127.0.0.1)."""
from __future__ import annotations

import os

import pytest

from amod_bench.runner.ray_session import DRIVER_ENV, LOCAL_RAY_ENV

# before any test imports Ray: every node on 127.0.0.1, as a local instance of bench.py
os.environ.update({**LOCAL_RAY_ENV, **DRIVER_ENV})


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """Two Ray nodes of 2 CPUs each on 127.0.0.1, connected for the whole session."""
    import ray
    from ray.cluster_utils import Cluster

    from amod_bench.runner import ray_env

    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 2, "node_ip_address": "127.0.0.1",
                                      "include_dashboard": False})
    cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, runtime_env={"env_vars": ray_env(local=True)},
             log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()
