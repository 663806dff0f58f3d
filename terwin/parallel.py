"""One executor for terwin's sweeps: design-space exploration, compression seed sweeps, sharded
verification. terwin schedules nothing itself: work goes to Ray (a local instance started on demand,
or a running cluster by address) or to the standard library's process pool.

    ex = Executor.choose(workers=4)                  # Ray locally when installed, else a process pool
    ex = Executor.choose(ray_address="10.0.0.5:6379")  # join an existing Ray cluster
    results = ex.map(run_one, configs, progress=Progress("sweep"))

`map` returns the results in the order of the items, whatever order they finish in; a task's
exception is raised again in the caller (as `TaskFailed`, naming the item) after the other running
tasks are given up. Task functions must be importable top-level functions (workers import them by
name), and items and results picklable.
"""
from __future__ import annotations

import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .errors import TerwinError

BACKENDS = ("ray", "process", "serial")


class TaskFailed(TerwinError):
    """One task of a sweep raised; the message names the item and the task's own error."""


def ray_available() -> bool:
    try:
        import ray  # noqa: F401  (a probe: is the optional engine installed?)
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Executor:
    backend: str = "process"
    workers: int = 1
    address: str | None = None  # Ray only: None = a local instance, else the cluster's address

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise TerwinError(f"unknown executor backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if not isinstance(self.workers, int) or not 1 <= self.workers <= 4096:
            raise TerwinError(f"workers must be an integer from 1 to 4096, not {self.workers!r}")
        if self.address is not None and self.backend != "ray":
            raise TerwinError("a cluster address needs the ray backend")

    @classmethod
    def choose(cls, workers: int | None = None, ray_address: str | None = None,
               backend: str | None = None) -> "Executor":
        """The executor a command line asks for: `--ray ADDRESS` joins a cluster; otherwise Ray on
        this machine when it is installed (a process pool when it is not, or when backend="process"),
        and "serial" for workers=1 unless a backend is named."""
        workers = os.cpu_count() or 1 if workers is None else workers
        if ray_address is not None:
            if backend not in (None, "ray"):
                raise TerwinError(f"--ray joins a Ray cluster; it cannot run on the {backend} backend")
            backend = "ray"
        elif backend is None:
            backend = "serial" if workers == 1 else ("ray" if ray_available() else "process")
        if backend == "ray" and not ray_available():
            raise TerwinError("the ray backend needs Ray: pip install 'ray>=2.9,<3' (or choose --workers without --ray)")
        return cls(backend=backend, workers=workers, address=ray_address)

    def describe(self) -> str:
        where = f"cluster {self.address}" if self.address else "this machine"
        return f"{self.backend} ({self.workers} worker{'s' if self.workers != 1 else ''}, {where})"

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], *, progress=None) -> list:
        items = list(items)
        if not items:
            return []
        run = {"serial": _map_serial, "process": _map_process, "ray": _map_ray}[self.backend]
        return run(self, fn, items, progress)


def _label(item) -> str:
    text = repr(item)
    return text if len(text) <= 120 else text[:117] + "..."


def _tick(progress, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def _map_serial(ex: Executor, fn, items, progress) -> list:
    results = []
    for index, item in enumerate(items):
        try:
            results.append(fn(item))
        except TerwinError:
            raise
        except Exception as error:
            raise TaskFailed(f"task {index} ({_label(item)}) failed: {type(error).__name__}: {error}") from error
        _tick(progress, index + 1, len(items))
    return results


def _map_process(ex: Executor, fn, items, progress) -> list:
    results: list = [None] * len(items)
    with ProcessPoolExecutor(max_workers=min(ex.workers, len(items))) as pool:
        pending = {pool.submit(fn, item): index for index, item in enumerate(items)}
        done_count = 0
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    index = pending.pop(future)
                    error = future.exception()
                    if error is not None:
                        if isinstance(error, TerwinError):
                            raise error
                        raise TaskFailed(f"task {index} ({_label(items[index])}) failed: "
                                         f"{type(error).__name__}: {error}") from error
                    results[index] = future.result()
                    done_count += 1
                    _tick(progress, done_count, len(items))
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return results


def _map_ray(ex: Executor, fn, items, progress) -> list:
    import ray  # optional engine: loaded only when a sweep asks for it

    started_here = not ray.is_initialized()
    if started_here:
        if ex.address is None:
            # a local instance's workers import tasks the way this process does (a user's script
            # folder, a test folder): they get this process's module search path
            path = os.pathsep.join(p for p in sys.path if p)
            ray.init(num_cpus=ex.workers, include_dashboard=False, log_to_driver=False,
                     configure_logging=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
        else:
            try:
                ray.init(address=ex.address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise TerwinError(f"cannot join the Ray cluster at {ex.address}: {error}") from None
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(fn)
        refs = [remote.remote(item) for item in items]
        index_of = {ref: index for index, ref in enumerate(refs)}
        results: list = [None] * len(items)
        pending = list(refs)
        done_count = 0
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            for ref in finished:
                index = index_of[ref]
                try:
                    results[index] = ray.get(ref)
                except ray.exceptions.RayTaskError as error:
                    for other in pending:
                        ray.cancel(other, force=True)
                    cause = error.cause if getattr(error, "cause", None) is not None else error
                    if isinstance(cause, TerwinError):
                        raise cause from None
                    raise TaskFailed(f"task {index} ({_label(items[index])}) failed: "
                                     f"{type(cause).__name__}: {cause}") from None
                done_count += 1
                _tick(progress, done_count, len(items))
        return results
    finally:
        if started_here:
            ray.shutdown()
