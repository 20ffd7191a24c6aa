"""Dask clusters for every stage: connect to one, or start a local, one-GPU-per-worker or Slurm one.

Every command that runs on Dask (``extract.run``, ``heads.sweep``) takes the same two flags,
handled here::

    --scheduler tcp://HOST:8786     an existing cluster (dask scheduler / dask worker, or any deployment)
    --cluster local                 distributed.LocalCluster: one single-threaded worker process per core
    --cluster cuda                  dask_cuda.LocalCUDACluster: one worker per GPU, CUDA_VISIBLE_DEVICES pinned
    --cluster slurm --slurm FILE    dask_jobqueue.SLURMCluster from a small TOML, adaptive between min and max jobs

The Slurm TOML (every key optional except ``partition``)::

    partition = "gpu"            # sbatch -p
    gres = "gpu:1"               # sbatch --gres (GPU workers get the Dask resource GPU=1)
    cores = 8                    # cores per job (one Dask worker process per job)
    memory = "32GB"              # memory per job
    walltime = "04:00:00"        # sbatch -t
    min_jobs = 1                 # adaptive scaling bounds
    max_jobs = 8
    python = "/shared/venv/bin/python"   # the workers' interpreter (default: this one)
    job_extra = ["--account=vision"]     # more #SBATCH lines
    prologue = ["module load cuda"]      # shell lines before the worker starts
    local_directory = "/tmp"     # worker scratch space on the node

Workers of a cluster we start carry the resource ``GPU=1`` when they own a GPU (cuda, and
slurm with a ``gpu`` gres), so GPU tasks submitted with ``resources={"GPU": 1}`` never land on
a CPU-only worker. Worker processes are not daemonic, so a task may start its own decode
processes. A task whose worker dies is retried on another worker once
(``distributed.scheduler.allowed-failures = 1`` on clusters we start); the caller decides what a
second death means.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from store.errors import SettingsError
from store.threads import available_cores

log = logging.getLogger(__name__)

CLUSTERS = ("local", "cuda", "slurm")
ALLOWED_FAILURES = 1  # a task whose worker died is retried once on another worker
_SLURM_KEYS = {"partition": str, "gres": str, "cores": int, "memory": str, "walltime": str, "min_jobs": int,
               "max_jobs": int, "python": str, "job_extra": list, "prologue": list, "local_directory": str}


@dataclass(frozen=True)
class SlurmConfig:
    """The Slurm TOML, checked (see the module docstring for the keys)."""

    partition: str
    gres: str | None = None
    cores: int = 8
    memory: str = "32GB"
    walltime: str = "04:00:00"
    min_jobs: int = 1
    max_jobs: int = 8
    python: str = sys.executable
    job_extra: tuple[str, ...] = ()
    prologue: tuple[str, ...] = ()
    local_directory: str = "/tmp"

    @property
    def gpus(self) -> bool:
        return bool(self.gres) and self.gres.split(":")[0] == "gpu"

    @classmethod
    def read(cls, path: str | Path) -> SlurmConfig:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise SettingsError(f"--slurm {path}: no such file") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"--slurm {path}: not valid TOML ({exc})") from None
        unknown = sorted(set(data) - set(_SLURM_KEYS))
        if unknown:
            raise SettingsError(f"--slurm {path}: unknown key(s) {unknown}; known: {sorted(_SLURM_KEYS)}")
        if "partition" not in data:
            raise SettingsError(f"--slurm {path}: give the partition (partition = \"gpu\")")
        for key, kind in _SLURM_KEYS.items():
            if key in data and not isinstance(data[key], kind):
                raise SettingsError(f"--slurm {path}: {key} must be a {kind.__name__}, got {data[key]!r}")
        for key in ("cores", "min_jobs", "max_jobs"):
            if key in data and data[key] < (0 if key == "min_jobs" else 1):
                raise SettingsError(f"--slurm {path}: {key} must be positive, got {data[key]}")
        config = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
        if config.min_jobs > config.max_jobs:
            raise SettingsError(f"--slurm {path}: min_jobs ({config.min_jobs}) > max_jobs ({config.max_jobs})")
        return config


def slurm_cluster(config: SlurmConfig, adapt: bool = True) -> Any:
    """A ``dask_jobqueue.SLURMCluster`` for ``config``, scaling adaptively between its job bounds.

    One Dask worker process per job, with all the job's cores as threads of that worker.
    ``adapt=False`` submits nothing (``cluster.job_script()`` shows what would be submitted).
    """
    from dask_jobqueue import SLURMCluster

    extra = [f"--gres={config.gres}"] if config.gres else []
    cluster = SLURMCluster(
        queue=config.partition, cores=config.cores, processes=1, memory=config.memory,
        walltime=config.walltime, python=config.python, job_extra_directives=extra + list(config.job_extra),
        job_script_prologue=list(config.prologue), local_directory=config.local_directory,
        worker_extra_args=["--resources", "GPU=1"] if config.gpus else [],
    )
    if adapt:
        cluster.adapt(minimum_jobs=config.min_jobs, maximum_jobs=config.max_jobs)
    return cluster


def local_cluster(n_workers: int | None = None, threads_per_worker: int = 1) -> Any:
    """A ``LocalCluster``: ``n_workers`` (default: one per core) worker processes of
    ``threads_per_worker`` threads, with the dashboard when bokeh is installed."""
    from distributed import LocalCluster

    bokeh = importlib.util.find_spec("bokeh") is not None
    return LocalCluster(n_workers=n_workers or available_cores(), threads_per_worker=threads_per_worker,
                        processes=True, memory_limit="auto", dashboard_address=":8787" if bokeh else None)


def cuda_cluster() -> Any:
    """``dask_cuda.LocalCUDACluster``: one worker per visible GPU, each with the resource ``GPU=1``."""
    if importlib.util.find_spec("dask_cuda") is None:
        raise SettingsError("--cluster cuda needs dask-cuda (pip install 'videofeat[gpu]' or pip install dask-cuda)")
    import torch
    from dask_cuda import LocalCUDACluster

    if not torch.cuda.is_available():
        raise SettingsError("--cluster cuda: no CUDA device is visible here; use --cluster local")
    return LocalCUDACluster(threads_per_worker=1, resources={"GPU": 1})


def dashboard_link(client: Any) -> str | None:
    """The scheduler's dashboard address, or None when it serves none (no bokeh where it runs).

    Without bokeh the scheduler still answers HTTP (health, metrics) but draws no dashboard, so
    the check asks the scheduler's process whether it can import bokeh.
    """
    try:
        has_bokeh = client.run_on_scheduler(lambda: importlib.util.find_spec("bokeh") is not None)
    except Exception as exc:  # noqa: BLE001 -- a locked-down scheduler: say nothing rather than guess
        log.info("cannot ask the scheduler about its dashboard: %s", exc)
        return None
    return client.dashboard_link if has_bokeh else None


def gpu_resources(client: Any) -> dict[str, int] | None:
    """``{"GPU": 1}`` for a task that needs a GPU, when some worker advertises the resource; else None.

    A cluster whose workers advertise no GPU (a LocalCluster on a GPU machine, a cluster started by
    hand without ``--resources GPU=1``) would never run a task that asks for one: it runs anywhere.
    """
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    if any((w.get("resources") or {}).get("GPU") for w in workers):
        return {"GPU": 1}
    log.warning("no Dask worker advertises the resource GPU (start them with --resources GPU=1, or use "
                "--cluster cuda): GPU tasks may land on any worker")
    return None


def check_choice(scheduler: str | None, cluster: str | None, slurm: str | Path | None) -> None:
    """One error line for flag combinations that cannot work (before anything starts)."""
    if scheduler and cluster:
        raise SettingsError("give --scheduler (an existing cluster) or --cluster (start one), not both")
    if cluster is not None and cluster not in CLUSTERS:
        raise SettingsError(f"--cluster must be one of {', '.join(CLUSTERS)}, got {cluster!r}")
    if (cluster == "slurm") != (slurm is not None):
        raise SettingsError("--cluster slurm needs --slurm FILE.toml (and --slurm only goes with --cluster slurm)")


@contextlib.contextmanager
def connect(scheduler: str | None = None, cluster: str | None = None, *, workers: int | None = None,
            slurm: str | Path | None = None, threads_per_worker: int = 1) -> Iterator[Any]:
    """A ``distributed.Client`` on an existing scheduler or on a cluster started here (closed on exit).

    Args:
        scheduler: ``tcp://HOST:PORT`` of a running scheduler.
        cluster: ``local``, ``cuda`` or ``slurm`` (see the module docstring).
        workers: LocalCluster worker processes (default: one per core).
        slurm: the Slurm TOML for ``cluster="slurm"``.
        threads_per_worker: threads of each LocalCluster worker.
    """
    import dask
    from distributed import Client

    check_choice(scheduler, cluster, slurm)
    logging.getLogger("distributed").setLevel(logging.WARNING)  # its INFO lines would bury the progress
    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise SettingsError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); "
                                "start one (dask scheduler / dask worker) or drop --scheduler") from None
        try:
            yield client
        finally:
            client.close()
        return
    config = {"distributed.scheduler.allowed-failures": ALLOWED_FAILURES, "distributed.worker.daemon": False}
    with dask.config.set(config):
        if cluster == "slurm":
            started = slurm_cluster(SlurmConfig.read(slurm))
        elif cluster == "cuda":
            started = cuda_cluster()
        else:
            started = local_cluster(workers, threads_per_worker)
        try:
            with Client(started) as client:
                yield client
        finally:
            started.close()
