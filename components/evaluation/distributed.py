"""The evaluation suite's grid of model passes, in this process or spread over Ray workers
(`tasks.<task>.evaluate.workers`).

The grid is a list of independent units: the clean split in chunks of whole batches, one
unit per corruption x severity, one per attack batch (FGSM and PGD at every eps). A unit's
result depends only on the unit (each corruption and each attack batch has its own seeded
random stream), so where and in which order units run does not change a number: `run_grid`
returns the results in grid order, and the suite merges them with the same code either way
(tests/test_scale.py checks the two paths give identical metrics).

On Ray, each worker is an actor holding the model and the test samples (sent once through the
object store); units go to whichever actor is free (ActorPool), so slow units (PGD) and fast
ones (a corruption) balance. Each actor takes `cpus_per_worker` CPUs and as many torch threads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from components.evaluation import adversarial, corruptions
from components.evaluation.predictions import Sample, predict_all

CLEAN_BATCHES = 4  # batches per clean unit: a few units, so the clean pass spreads too


@dataclass(frozen=True)
class Unit:
    kind: str  # clean | corruption | attack
    start: int = 0  # clean: first image; attack: first image of the subsample's batch
    stop: int = 0
    name: str = ""  # corruption
    level: float = 0.0


@dataclass(frozen=True)
class Grid:
    """What every unit needs besides the model and the samples (plain values: sent to workers)."""

    task: str
    classes: list[str]
    subset: list[int]  # indices of the robustness subsample in the test split
    levels: dict[str, list[float]]
    eps: list[float]
    pgd_steps: int
    pgd_step_size: float
    batch_size: int
    seed: int

    def units(self, images: int) -> list[Unit]:
        chunk = self.batch_size * CLEAN_BATCHES  # whole batches: the same batches as one pass
        clean = [Unit("clean", s, min(s + chunk, images)) for s in range(0, images, chunk)]
        corrupted = [Unit("corruption", name=n, level=lv) for n, _, lv in corruptions.grid(self.levels)]
        starts = adversarial.attack_starts(len(self.subset), self.batch_size, self.eps) if self.eps else []
        attacks = [Unit("attack", s, e) for s, e in zip(starts, [*starts[1:], len(self.subset)], strict=True)]
        return clean + corrupted + attacks

    def passes(self, unit: Unit) -> int:
        """Image passes through the model of a unit (the progress bar's unit)."""
        if unit.kind == "clean":
            return unit.stop - unit.start
        if unit.kind == "corruption":
            return len(self.subset)
        return adversarial.batch_passes(unit.stop - unit.start, self.eps, self.pgd_steps)

    def run(self, unit: Unit, model: torch.nn.Module, samples: Sequence[Sample]) -> Any:
        """One unit: clean (predictions, targets) of its images, a corruption's monitored
        metric, or an attack batch's (predictions per attack and eps, targets)."""
        from components.tasks import get_task

        spec = get_task(self.task)
        if unit.kind == "clean":
            return predict_all(spec, model, samples[unit.start:unit.stop], self.batch_size)
        subset = [samples[i] for i in self.subset]
        if unit.kind == "corruption":
            return corruptions.corruption_value(spec, model, self.classes, subset, unit.name, unit.level,
                                                self.batch_size, self.seed)
        return adversarial.attack_batch(spec, model, subset[unit.start:unit.stop], self.eps, self.pgd_steps,
                                        self.pgd_step_size, self.seed, unit.start)


class _PassWorker:
    """A Ray actor: the model and samples once, then any number of units."""

    def __init__(self, grid: Grid, model: torch.nn.Module, samples: list[Sample], threads: int) -> None:
        torch.set_num_threads(threads)
        self.grid, self.model, self.samples = grid, model.eval(), samples

    def run(self, index: int, unit: Unit) -> tuple[int, Any, str]:
        import os

        import ray

        where = f"node {ray.get_runtime_context().get_node_id()[:8]} pid {os.getpid()}"
        return index, self.grid.run(unit, self.model, self.samples), where


def run_grid(grid: Grid, model: torch.nn.Module, samples: list[Sample], workers: int, cpus_per_worker: float = 1,
             progress: Any = None) -> list[Any]:
    """Every unit's result, in grid order: in this process (workers 0) or on `workers` Ray actors
    (the caller has connected to Ray)."""
    units = grid.units(len(samples))
    if workers <= 0:
        results = []
        for unit in units:
            results.append(grid.run(unit, model, samples))
            if progress is not None:
                progress.update(grid.passes(unit))
        return results
    import ray
    from ray.util import ActorPool

    actor = ray.remote(num_cpus=cpus_per_worker)(_PassWorker)
    model_ref, samples_ref = ray.put(model), ray.put(samples)  # once, shared by every actor
    threads = max(1, int(cpus_per_worker))
    actors = [actor.remote(grid, model_ref, samples_ref, threads) for _ in range(workers)]
    pool = ActorPool(actors)
    results: list[Any] = [None] * len(units)
    where: Counter[str] = Counter()
    # the slowest units first (attacks, then corruptions), so no worker is left with a long one at the end
    order = sorted(range(len(units)), key=lambda i: -grid.passes(units[i]))
    for index, result, worker in pool.map_unordered(lambda a, i: a.run.remote(i, units[i]), order):
        results[index] = result
        where[worker] += 1
        if progress is not None:
            progress.update(grid.passes(units[index]))
    for handle in actors:  # free their CPUs for what follows on the cluster
        ray.kill(handle)
    print(f"evaluation passes: {len(units)} units on {len(where)} Ray workers: "
          + ", ".join(f"{w}: {n}" for w, n in sorted(where.items())), flush=True)
    return results


def split_results(grid: Grid, units: list[Unit], results: list[Any]) -> tuple[list[Any], list[float], list[Any]]:
    """(clean unit results, corruption values, attack batch results), each in grid order."""
    kinds = [u.kind for u in units]
    return tuple([r for k, r in zip(kinds, results, strict=True) if k == kind]  # type: ignore[return-value]
                 for kind in ("clean", "corruption", "attack"))
