"""Replications as Ray tasks: the thin shell over ``runner.run_replication``.

    results = run_tasks(tasks, num_cpus=2, on_result=print)

Starts a local Ray when none is running (``num_cpus`` caps the workers) or joins the running one;
``num_cpus=0`` runs in this process, one replication after another (no Ray at all).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from simulation.whatif.runner import ReplicationResult, ReplicationTask, run_replication


def run_tasks(tasks: Sequence[ReplicationTask], num_cpus: int | None = None,
              on_result: Callable[[ReplicationResult], None] | None = None,
              address: str | None = None) -> list[ReplicationResult]:
    """Run every task; results come back in task order, ``on_result`` is called as each finishes."""
    if num_cpus == 0:
        return _run_inline(tasks, on_result)
    import ray

    started_here = False
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        started_here = True
    try:
        remote = ray.remote(num_cpus=1)(run_replication)
        pending = {remote.remote(task): i for i, task in enumerate(tasks)}
        results: list[ReplicationResult | None] = [None] * len(tasks)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                index = pending.pop(ref)
                results[index] = ray.get(ref)
                if on_result is not None:
                    on_result(results[index])
        return [r for r in results if r is not None]
    finally:
        if started_here:
            ray.shutdown()


def _run_inline(tasks: Sequence[ReplicationTask],
                on_result: Callable[[ReplicationResult], None] | None) -> list[ReplicationResult]:
    results = []
    for task in tasks:
        result = run_replication(task)
        if on_result is not None:
            on_result(result)
        results.append(result)
    return results
