"""Jobs in spawned worker processes, their progress forwarded to the caller's reporter.

``prepare`` (one job per scene) and CLIP precompute (one job per chunk of frames) both run
here: a worker gets a ``Reporter`` whose calls travel through a queue to the parent, which
replays them on the real one, so progress bars move while the workers run.
"""

from __future__ import annotations

import multiprocessing
import queue
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterator, Sequence, TypeVar

from .reporting import NULL_REPORTER, Reporter

Job = TypeVar("Job")
Result = TypeVar("Result")


def run_jobs(
    fn: Callable[[Job, Reporter], Result], jobs: Sequence[Job], workers: int, reporter: Reporter = NULL_REPORTER
) -> Iterator[Result]:
    """``fn(job, reporter)`` of every job, results in completion order.

    ``workers == 1`` or a single job: in this process, in order. Otherwise a spawn pool of up to
    ``workers`` processes (fork with an initialised torch / CUDA / HDF5 is not safe); ``fn`` must
    be a module-level function and the jobs plain data, since both are pickled. A caller that
    stops iterating (or raises) cancels the jobs not started yet; an error raised in a worker is
    raised here.
    """
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield fn(job, reporter)
        return
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context, initializer=_worker_init, initargs=(messages,))
    completed = False
    try:
        pending = {pool.submit(_worker_call, fn, job) for job in jobs}
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _forward(messages, reporter)
            for future in done:
                yield future.result()
        completed = True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if completed:  # a worker flushes its queue before it exits: what trailed the results is here now
            _forward(messages, reporter)
        messages.close()


def _forward(messages: Any, reporter: Reporter) -> None:
    while True:
        try:
            kind, args = messages.get_nowait()
        except queue.Empty:
            return
        getattr(reporter, kind)(*args)


class _QueueReporter(Reporter):
    """A worker's reporter: every call becomes a message the parent replays on the real one."""

    def __init__(self, messages: Any):
        self.messages = messages

    def task(self, name: str, total: int | None) -> None:
        self.messages.put(("task", (name, total)))

    def advance(self, name: str, n: int = 1) -> None:
        self.messages.put(("advance", (name, n)))

    def note(self, message: str) -> None:
        self.messages.put(("note", (message,)))


_WORKER_REPORTER: Reporter = NULL_REPORTER


def _worker_init(messages: Any) -> None:
    global _WORKER_REPORTER
    _WORKER_REPORTER = _QueueReporter(messages)


def _worker_call(fn: Callable[[Any, Reporter], Any], job: Any) -> Any:
    return fn(job, _WORKER_REPORTER)
