"""The process group of a cell's workers, with its rendezvous store on the node's own address.

Ray Train's torch backend starts each run's process group with `init_process_group(env://)`:
rank 0 then hosts torch's TCPStore, which has no authentication, on every interface of its node
(0.0.0.0), and torch has no setting for the store's bind address. The store does accept a socket
that is already listening (`TCPStore(master_listen_fd=...)`), so this backend binds one to the
address Ray gave the node (127.0.0.1 for a local instance of bench.py, the node's cluster address
otherwise), builds the store on it and hands the store to `init_process_group(store=...)`. Gloo's
own connections follow GLOO_SOCKET_IFNAME (ray_session.LOCAL_RAY_ENV).

Ray's public API only: `TorchConfig` (a stable API) whose `backend_cls` is a `ray.train.backend.Backend`
(a developer API) of our own; the worker group is driven as Ray's backends drive it.
"""
from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass

from ray.train.backend import Backend
from ray.train.torch import TorchConfig

SHUTDOWN_TIMEOUT_S = 30  # a worker that does not leave its process group by then is being killed anyway

# rank 0's store, held for the process group's lifetime (the process group keeps only a reference
# to a wrapper of it, and the listening socket is the store's)
_master_store = None


def _listening_socket(host: str) -> socket.socket:
    family = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(128)
    return sock


def _open_master_store(world_size: int, timeout_s: int) -> tuple[str, int]:
    """On rank 0: the store, listening on this node's Ray address only; returns (address, port)."""
    global _master_store
    import ray
    import torch.distributed as dist

    host = ray.util.get_node_ip_address()
    sock = _listening_socket(host)
    port = sock.getsockname()[1]
    _master_store = dist.TCPStore(host, port, world_size, is_master=True, master_listen_fd=sock.detach(),
                                  wait_for_workers=False, timeout=datetime.timedelta(seconds=timeout_s))
    return host, port


def _join_process_group(backend: str, host: str, port: int, world_rank: int, world_size: int,
                        timeout_s: int) -> None:
    """On every rank: the environment torch's launchers set, then the process group on rank 0's store."""
    import ray.train
    import torch.distributed as dist

    context = ray.train.get_context()
    os.environ.update({"MASTER_ADDR": host, "MASTER_PORT": str(port), "RANK": str(world_rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(context.get_local_rank()),
                       "LOCAL_WORLD_SIZE": str(context.get_local_world_size()),
                       "NODE_RANK": str(context.get_node_rank())})
    timeout = datetime.timedelta(seconds=timeout_s)
    store = _master_store if world_rank == 0 else dist.TCPStore(host, port, world_size, is_master=False, timeout=timeout)
    dist.init_process_group(backend=backend, store=store, rank=world_rank, world_size=world_size, timeout=timeout)


def _leave_process_group() -> None:
    global _master_store
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    _master_store = None


class NodeBoundTorchBackend(Backend):
    share_cuda_visible_devices = True  # as Ray's torch backend: each worker sees its node's GPUs

    def on_start(self, worker_group, backend_config: "NodeBoundTorchConfig") -> None:
        import ray

        world_size = len(worker_group)
        host, port = worker_group.execute_single(0, _open_master_store, world_size=world_size,
                                                 timeout_s=backend_config.timeout_s)
        ray.get([worker_group.execute_single_async(rank, _join_process_group, backend=backend_config.backend,
                                                   host=host, port=port, world_rank=rank, world_size=world_size,
                                                   timeout_s=backend_config.timeout_s)
                 for rank in range(world_size)])

    def on_shutdown(self, worker_group, backend_config) -> None:
        import ray
        from ray.exceptions import GetTimeoutError

        try:
            ray.get(worker_group.execute_async(_leave_process_group), timeout=SHUTDOWN_TIMEOUT_S)
        except GetTimeoutError:
            pass  # the workers are shut down next, process groups and all


@dataclass
class NodeBoundTorchConfig(TorchConfig):
    """`TorchConfig` whose process group's store listens on the node's Ray address only.
    `backend` (gloo or nccl) is set by TorchTrainer from the scaling config when left None."""

    @property
    def backend_cls(self):
        return NodeBoundTorchBackend
