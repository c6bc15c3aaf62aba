"""One run over several devices: a process group launched the way `torchrun` launches one, with a c10d TCPStore as
its rendezvous.

The train worker that claimed the run is rank 0: it keeps the lease, the recorder, the supervisor and the checkpoints
(workers/training.py) and hosts the store. It writes the run's spec (configs, data files, the checkpoint to resume)
in the store and starts the other local ranks as child processes (`python -m workers.distributed rank`, with RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set as torchrun sets them). Each rank reads the spec from the
store, says which kind of device it has, joins the group (NCCL on CUDA, gloo on the CPU) and calls
train(..., ddp=True) with no callbacks: the other ranks only compute.

Several machines: a worker started with TRAINING_RDZV_ENDPOINT=host:port and TRAINING_NNODES=n hosts the store at
that address (node 0, the one that takes runs from the queue); on each other machine
`python -m workers.distributed node` with the same endpoint, TRAINING_NNODES and its TRAINING_NODE_RANK waits for a
run's spec there and starts that node's share of the ranks (devices / nnodes each).

Failure: every collective has a timeout (TRAINING_RDZV_TIMEOUT); a child rank that dies makes rank 0's next collective
fail (gloo hears the socket close at once), which ends in GroupFailed(requeue=True): the run goes back to the queue and
resumes from its last checkpoint. A rank 0 killed with SIGKILL closes the store's sockets; the children also watch
their parent and exit. A rendezvous that does not complete in time ends in GroupFailed(requeue=False): the run fails
with the message and can be resumed from the run page.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

STORE_CONNECT_SECONDS = 600.0  # a follower node waits this long for node 0's store before trying again


class GroupFailed(Exception):
    """The process group did not form, or lost a rank. requeue: the run may simply continue from its checkpoint."""

    def __init__(self, message: str, *, requeue: bool):
        super().__init__(message)
        self.requeue = requeue


def backend_for(kind: str) -> str:
    return "nccl" if kind == "cuda" else "gloo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_device_kind() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"TRAINING_RDZV_ENDPOINT ({endpoint!r}) must be host:port, e.g. 10.0.0.5:29400")
    return host, int(port)


# ----------------------------------------------------------------------------------------------------------------------
# rank 0: the train worker's side


@contextmanager
def process_group(*, devices: int, spec: dict, kind: str, timeout: float, endpoint: str = "", nnodes: int = 1,
                  device_ids: list[int] | None = None):
    """Form a process group of `devices` ranks around this process (rank 0) for the body; yields whether train()
    should run with ddp. spec: {"model_config", "train_config", "train", "val", "resume"} (file paths; resume None).
    device_ids: the CUDA devices of the local ranks, in rank order (TrainConfig.device_ids; None: 0, 1, ...).
    Raises GroupFailed when the group does not form within `timeout` seconds or loses a rank."""
    if devices == 1:
        if kind == "cuda":
            torch.cuda.set_device(device_ids[0] if device_ids else 0)  # train() puts the model on the current GPU
        yield False
        return
    if devices % nnodes:
        raise GroupFailed(f"devices ({devices}) must divide among the {nnodes} nodes (TRAINING_NNODES): each node "
                          f"runs the same number of ranks", requeue=False)
    if device_ids and nnodes > 1:
        raise GroupFailed(f"which devices (device_ids {','.join(map(str, device_ids))}) chooses GPUs of one machine; a "
                          f"run over the {nnodes} machines of TRAINING_NNODES uses GPUs 0..{devices // nnodes - 1} of "
                          f"each: leave it empty", requeue=False)
    host, port = split_endpoint(endpoint) if endpoint else ("127.0.0.1", free_port())
    key = uuid.uuid4().hex  # this attempt's keys: a follower tells a new run from the last one by it
    store = dist.TCPStore("0.0.0.0" if endpoint else host, port, is_master=True, wait_for_workers=False,
                          timeout=timedelta(seconds=timeout))
    device_ids = device_ids or list(range(devices // nnodes))
    store.set("spec", json.dumps(spec | {"key": key, "world": devices, "nproc": devices // nnodes, "kind": kind,
                                         "timeout": timeout, "device_ids": device_ids}))
    children = [launch_rank(rank=r, local_rank=r, world=devices, host=host, port=port) for r in range(1, devices // nnodes)]
    try:
        _rendezvous(store, key, devices, kind, timeout, children)
        if kind == "cuda":
            torch.cuda.set_device(device_ids[0])
        dist.init_process_group(backend_for(kind), store=dist.PrefixStore(key, store), rank=0, world_size=devices,
                                timeout=timedelta(seconds=timeout))
        try:
            yield True
        except Exception as exc:
            # a collective that failed (gloo raises a plain RuntimeError when a peer's socket closes, which can come
            # before the dead child's exit status does: wait a moment for it); other errors (bad data, a config)
            # are the run's own and every rank meets them alike: they fail the run as on one device
            broken = isinstance(exc, dist.DistError) or (
                isinstance(exc, RuntimeError) and ("gloo" in str(exc) or "NCCL" in str(exc) or _dead(children, 5.0)))
            dead = _dead(children) or "a rank on another node"
            if broken:
                raise GroupFailed(f"{dead} of the {devices} training processes stopped ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:200]}); the group stopped, and the run continues from "
                                  f"its last checkpoint", requeue=True) from exc
            raise
        finally:
            dist.destroy_process_group()
    finally:
        _stop(children)
        del store


def _rendezvous(store, key: str, world: int, kind: str, timeout: float, children) -> None:
    """Wait until every rank has said which device it has; refuse a group of mixed kinds."""
    deadline = time.monotonic() + timeout
    kinds = {0: kind}
    while len(kinds) < world:
        for rank in range(1, world):
            if rank not in kinds and store.check([f"{key}/kind/{rank}"]):
                kinds[rank] = store.get(f"{key}/kind/{rank}").decode()
        if _dead(children):
            raise GroupFailed(f"{_dead(children)} exited before the group formed", requeue=False)
        if time.monotonic() > deadline:
            missing = [r for r in range(world) if r not in kinds]
            raise GroupFailed(f"the rendezvous did not complete within TRAINING_RDZV_TIMEOUT ({timeout:.0f} s): "
                              f"{len(kinds)} of {world} ranks joined, ranks {missing} never did. Start the other "
                              f"nodes (python -m workers.distributed node) or ask for fewer devices, then resume the "
                              f"run.", requeue=False)
        time.sleep(0.05)
    if len(set(kinds.values())) > 1:
        listed = ", ".join(f"rank {r}: {k}" for r, k in sorted(kinds.items()))
        raise GroupFailed(f"one run cannot mix device kinds ({listed}): every rank of a group must compute on the "
                          f"same kind of device; start the run on workers of one kind", requeue=False)


def launch_rank(*, rank: int, local_rank: int, world: int, host: str, port: int) -> subprocess.Popen:
    env = os.environ | {"RANK": str(rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(world),
                        "MASTER_ADDR": host, "MASTER_PORT": str(port), "TRAINING_PARENT_PID": str(os.getpid())}
    return subprocess.Popen([sys.executable, "-m", "workers.distributed", "rank"], env=env)


def _dead(children, wait: float = 0.0) -> str:
    deadline = time.monotonic() + wait
    while wait and time.monotonic() < deadline and all(p.poll() is None for p in children):
        time.sleep(0.1)
    gone = [(i + 1, p.returncode) for i, p in enumerate(children) if p.poll() not in (None, 0)]
    return ", ".join(f"rank {r} (exit code {code})" for r, code in gone)


def _stop(children, grace: float = 30.0) -> None:
    deadline = time.monotonic() + grace
    for p in children:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# ----------------------------------------------------------------------------------------------------------------------
# the other ranks


def rank_main() -> None:
    """A rank other than 0 (set up by launch_rank or node_main): join, train the spec, leave."""
    from workers.gpt import checkpoint as ckpt_lib
    from workers.gpt.config import GPTConfig, TrainConfig
    from workers.gpt.data import open_tokens
    from workers.gpt.train import train

    rank, local_rank, world = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    _watch_parent(int(os.environ.get("TRAINING_PARENT_PID", os.getppid())))
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                          timeout=timedelta(seconds=STORE_CONNECT_SECONDS))
    spec = json.loads(store.get("spec"))
    key, timeout, kind = spec["key"], spec["timeout"], local_device_kind()
    if kind == "cuda":
        torch.cuda.set_device(spec["device_ids"][local_rank])
    store.set(f"{key}/kind/{rank}", kind)
    dist.init_process_group(backend_for(kind), store=dist.PrefixStore(key, store), rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout))
    try:
        resume = ckpt_lib.load_checkpoint(_here(spec, spec["resume"]), "cpu") if spec["resume"] else None
        train(GPTConfig.from_dict(spec["model_config"]), TrainConfig.from_dict(spec["train_config"]),
              open_tokens(_here(spec, spec["train"])), open_tokens(_here(spec, spec["val"])), resume=resume, ddp=True)
    finally:
        dist.destroy_process_group()


def _here(spec: dict, path: str) -> str:
    """A path of node 0's ARTIFACTS_DIR, on this node (which may mount the shared folder elsewhere)."""
    mine = os.environ.get("ARTIFACTS_DIR")
    if mine and spec.get("artifacts_dir") and path.startswith(spec["artifacts_dir"]):
        return str(Path(mine) / Path(path).relative_to(spec["artifacts_dir"]))
    return path


def _watch_parent(pid: int) -> None:
    """Exit when the process that started this rank is gone (killed with SIGKILL, it told nobody)."""
    def watch():
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            time.sleep(0.5)
    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def node_main() -> None:
    """Another machine's share of each multi-node run: wait for node 0's spec at TRAINING_RDZV_ENDPOINT and start
    this node's ranks (node rank TRAINING_NODE_RANK of TRAINING_NNODES), run after run, until interrupted."""
    host, port = split_endpoint(os.environ["TRAINING_RDZV_ENDPOINT"])
    node_rank, nnodes = int(os.environ["TRAINING_NODE_RANK"]), int(os.environ.get("TRAINING_NNODES", 2))
    if not 0 < node_rank < nnodes:
        raise SystemExit(f"TRAINING_NODE_RANK ({node_rank}) must be 1..{nnodes - 1}: node 0 is the train worker")
    last = None
    once = os.environ.get("TRAINING_NODE_ONCE") == "1"  # tests: serve one run, then exit
    while True:
        try:
            store = dist.TCPStore(host, port, is_master=False, timeout=timedelta(seconds=STORE_CONNECT_SECONDS))
            spec = json.loads(store.get("spec"))
        except (RuntimeError, dist.DistError):
            time.sleep(1.0)  # node 0 has no run (its store is down): wait for the next
            continue
        if spec["key"] == last:
            time.sleep(1.0)
            continue
        last = spec["key"]
        nproc = spec["nproc"]
        print(f"node {node_rank}: joining a run of {spec['world']} ranks as ranks "
              f"{node_rank * nproc}..{node_rank * nproc + nproc - 1}", flush=True)
        children = [launch_rank(rank=node_rank * nproc + i, local_rank=i, world=spec["world"], host=host, port=port)
                    for i in range(nproc)]
        for p in children:
            p.wait()
        del store
        if once:
            return


if __name__ == "__main__":
    {"rank": rank_main, "node": node_main}[sys.argv[1]]()
