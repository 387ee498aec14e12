"""Independent steps in parallel processes, with the same bits as one after the other.

A cold ``t3unlearn demo`` trains two models from the same base and evaluates four; none needs another's
result, and each is bitwise reproducible for a given torch thread count. :class:`Workers` runs such steps in
spawned processes (a fresh interpreter: no thread pool inherited across ``fork``) with **one torch thread
each**, so a step gives the same tensors in a worker as in a one-thread process of its own.

Output stays readable: a worker's standard output and error go out as whole lines, each prefixed with its
job's name (``[full] training full: 40%|...``), and progress bars print plain lines there (one every
:data:`t3unlearn.progress.LOG_INTERVAL` seconds) instead of redrawing a terminal line two processes share.

Jobs are module-level functions called with plain arguments (paths, names, numbers) that return small plain
values; they hand their real results over through files (a model directory, a cached evaluation).
"""

from __future__ import annotations

import io
import os
import sys
from typing import Callable

from t3unlearn.errors import T3Error


def choose_jobs(setting: str | int | None = "auto", *, threads: int = 1) -> int:
    """Processes for ``--jobs``: a number >= 1, or ``auto`` (one per ``threads`` cores, at least one)."""
    if setting is None or str(setting) == "auto":
        return max(1, (os.cpu_count() or 1) // max(1, threads))
    try:
        n = int(setting)
    except (TypeError, ValueError):
        raise T3Error(f"must be a number of processes (1 = one step after the other) or auto, not {setting!r}.",
                      option="jobs") from None
    if n < 1:
        raise T3Error(f"must be >= 1 (1 = one step after the other) or auto, not {n}.", option="jobs")
    return n


class PrefixedLines(io.TextIOBase):
    """A text stream that writes whole lines to file descriptor ``fd``, each starting with ``prefix``, in one
    ``write`` call each (so lines of processes sharing a terminal or a log never mix). A carriage return ends
    a line too (a bar's redraw becomes a line of its own); the unfinished tail waits for its end."""

    def __init__(self, fd: int, prefix: str):
        super().__init__()
        self.fd, self.prefix, self._tail = fd, prefix, ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        lines = (self._tail + text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._tail = lines.pop()
        for line in lines:
            if line.strip():
                os.write(self.fd, f"{self.prefix}{line}\n".encode("utf-8", "replace"))
        return len(text)

    def finish(self) -> None:
        if self._tail.strip():
            os.write(self.fd, f"{self.prefix}{self._tail}\n".encode("utf-8", "replace"))
        self._tail = ""


def _die_with_parent() -> None:
    """End this worker when the process that started it ends, even by SIGKILL (a killed demo leaves no worker
    training on): Linux's parent-death signal, and a watch on the parent's pid elsewhere."""
    import threading
    import time

    parent = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (AttributeError, OSError):  # pragma: no cover - an unusual libc
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="t3unlearn-parent-watch").start()


def _start_worker(preload: tuple[str, ...] = ()) -> None:
    import importlib

    _die_with_parent()
    import torch

    torch.set_num_threads(1)
    if os.environ.get("T3UNLEARN_PROGRESS", "").strip().lower() != "off":
        os.environ["T3UNLEARN_PROGRESS"] = "log"  # whole lines, never a bar redrawn over another process's
    for module in preload:
        importlib.import_module(module)


def _ready() -> None:
    return None


def _run_job(name: str, fn: Callable, args: tuple, kwargs: dict):
    """In the worker: ``fn(*args, **kwargs)`` with its output as whole lines prefixed ``[name]``."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PrefixedLines(1, f"[{name}] "), PrefixedLines(2, f"[{name}] ")
    try:
        return fn(*args, **kwargs)
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.finish()
        sys.stdout, sys.stderr = saved


class Workers:
    """A pool of ``n`` spawned worker processes, one torch thread each (a context manager).

    ``preload``: modules each worker imports as it starts; with them all ``n`` workers start on entering the
    block (seconds of imports each, best spent while the machine has an idle core) instead of at their first job.

    ``submit(name, fn, *args, **kwargs)`` returns a :class:`concurrent.futures.Future`; ``name`` prefixes the
    job's output lines. Leaving the block waits for every job (then :func:`children_cpu_seconds` counts the
    workers' CPU time).
    """

    def __init__(self, n: int, preload: tuple[str, ...] = ()):
        self.n, self.preload = n, tuple(preload)
        self._pool = None

    def __enter__(self) -> "Workers":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(max_workers=self.n, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start_worker, initargs=(self.preload,))
        if self.preload:
            for _ in range(self.n):  # no worker is idle yet, so each of these starts one
                self._pool.submit(_ready)
        return self

    def submit(self, name: str, fn: Callable, *args, **kwargs):
        return self._pool.submit(_run_job, name, fn, args, kwargs)

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True, cancel_futures=exc[0] is not None)


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's finished (waited-for) child processes."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def stop_process(proc, grace: float = 10.0) -> None:
    """Interrupt a child process (SIGINT, as Ctrl+C would) and give it ``grace`` seconds to clean up its
    temporaries, then kill it; a second Ctrl+C while waiting kills it at once."""
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(grace)
    except BaseException:  # too slow, or a second Ctrl+C
        proc.kill()
        proc.wait()
