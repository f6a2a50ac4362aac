"""Tune callbacks of the tune stage; they run in the Tune driver (the stage's process)."""

from __future__ import annotations

import json
import time
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunStatus
from ray import tune

from components.runtime import tracking


class MlflowTrials(tune.Callback):
    """Each trial a nested MLflow run under the tuning run: its sampled params, a metric
    curve (one point per epoch) and whether ASHA stopped it early. Logged from the driver
    only, so one process writes to the (SQLite) store."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, task: str, max_t: int) -> None:
        self.client = mlflow.MlflowClient(tracking_uri)
        self.experiment_id, self.parent, self.task, self.max_t = experiment_id, parent_run_id, task, max_t
        self.runs: dict[str, str] = {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run = self.client.create_run(
            self.experiment_id, run_name=f"{self.task}-trial-{trial.trial_id}",
            tags={"mlflow.parentRunId": self.parent, "cvops.task": self.task, "cvops.stage": "tune",
                  "cvops.trial_id": trial.trial_id},
        )
        self.runs[trial.trial_id] = run.info.run_id
        values = [Param(k, json.dumps(v) if isinstance(v, list | dict) else str(v)) for k, v in trial.config.items()]
        self.client.log_batch(run.info.run_id, params=values)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run_id = self.runs.get(trial.trial_id)
        step = int(result.get("training_iteration", 1)) - 1
        now = int(time.time() * 1000)
        metrics = [Metric(tracking.metric_key(k), float(v), now, step) for k, v in result.items()
                   if k.startswith(("train/", "val/", "perf/")) and isinstance(v, int | float)]
        if run_id and metrics:
            self.client.log_batch(run_id, metrics=metrics)

    def _end(self, trial: Any, status: str) -> None:
        run_id = self.runs.pop(trial.trial_id, None)
        if run_id is None:
            return
        epochs = int((trial.last_result or {}).get("training_iteration", 0))
        self.client.set_tag(run_id, "cvops.epochs", str(epochs))
        self.client.set_tag(run_id, "cvops.stopped_early", str(status == "FINISHED" and epochs < self.max_t).lower())
        self.client.set_terminated(run_id, status=status)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, RunStatus.to_string(RunStatus.FINISHED))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, RunStatus.to_string(RunStatus.FAILED))


class OrphanPlacementGroupReaper(tune.Callback):
    """Removes placement groups whose creating actor is dead.

    Why: when ASHA stops a trial, Tune kills the trial actor, and the Train controller it
    owns dies *before* removing its workers' placement group. Ray Train's own cleaner only
    notices a dead controller through the State API, which needs ray[default] (the
    dashboard). Without this, the leaked group holds the CPUs and the next trial waits for
    workers until the start timeout. Uses Ray's private GCS accessors (checked with Ray
    2.60): isolated here so an upgrade touches one class.
    """

    def __init__(self, interval_s: float = 2.0) -> None:
        self.interval_s, self.last = interval_s, 0.0

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self.last < self.interval_s:
            return
        self.last = time.monotonic()
        import ray
        from ray._private.state import state
        from ray.core.generated import gcs_pb2
        from ray.util.placement_group import PlacementGroup, remove_placement_group

        for raw in state._connect_and_get_accessor().get_placement_group_table():
            group = gcs_pb2.PlacementGroupTableData.FromString(raw)
            if (group.state != gcs_pb2.PlacementGroupTableData.REMOVED and not group.is_detached
                    and not ray.ActorID(group.creator_actor_id).is_nil() and group.creator_actor_dead):
                remove_placement_group(PlacementGroup(ray.PlacementGroupID(group.placement_group_id)))
