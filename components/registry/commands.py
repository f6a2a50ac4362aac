"""What `cvops history`, `cvops rollback`, `cvops predict` and `cvops lineage` do (cli.py only parses)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from components.config import ConfigError, Params
from components.registry.audit import format_history, history
from components.registry.record import read_record
from components.registry.rollback import rollback
from components.runtime import tracking


def _client(params: Params, task: str) -> tuple[MlflowClient, str, str]:
    params.task(task)  # an unknown task is a configuration error
    uri = tracking.tracking_uri(params)
    mlflow.set_tracking_uri(uri)
    client, name = MlflowClient(uri), tracking.model_name(params, task)
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise ConfigError(f"{uri} has no registered model {name}: run the pipeline (cvops run) first") from None
    return client, name, uri


def history_command(params: Params, task: str, as_json: bool = False) -> str:
    client, name, _ = _client(params, task)
    entries = history(client, name)
    if as_json:
        return json.dumps(entries, indent=2)
    return "\n\n".join([format_history(name, entries), *gate_tables(client, name, entries)])


def gate_tables(client: MlflowClient, name: str, entries: list[dict]) -> list[str]:
    """Each registered version's gate table (gate.gate_table, kept in its record)."""
    versions = dict.fromkeys(e["to"] for e in entries if e["what"] == "register")
    tables = []
    for v in versions:
        tags = read_record(client, client.get_model_version(name, v))
        if "cvops.gate.table" in tags:
            tables.append(f"v{v} gate: {tags.get('cvops.gate.reason', '')}\n{tags['cvops.gate.table']}")
    return tables


def rollback_command(params: Params, task: str, to: str | None) -> str:
    client, name, uri = _client(params, task)
    entry = rollback(client, uri, name, to)
    return f"{name}@champion: v{entry['from']} -> v{entry['to']} (audit entry {entry['seq']})"


def predict_command(params: Params, task: str, images: list[str], out: str | None, alias: str,
                    conf: float | None = None, iou: float | None = None, max_det: int | None = None,
                    runtime: str = "torch") -> tuple[str, dict[str, str]]:
    """(one line per predicted image and a closing line, failed input -> reason)."""
    from components.serving.predict import predict_files, summary

    _, name, _ = _client(params, task)
    out_dir = Path(out or Path("predictions") / task)
    records, failed = predict_files(task, name, images, out_dir, alias, conf, iou, max_det, runtime)
    lines = [f"{r['image']}: {summary(r)}" for r in records]
    skipped = f", {len(failed)} input(s) skipped" if failed else ""
    done = f"{len(records)} image(s) predicted by {name}@{alias} ({runtime}){skipped}"
    if records:
        done += f" -> {out_dir}/predictions.json, overlays in {out_dir}/"
    return "\n".join([*lines, done]), failed


def lineage_command(params: Params, model: str, as_json: bool = False) -> str:
    """`model`: models:/<name>@<alias>, models:/<name>/<version>, or a task (its @champion)."""
    from components.registry.lineage_report import describe, format_lineage

    if model in params.tasks:
        model = f"models:/{tracking.model_name(params, model)}@champion"
    uri = tracking.tracking_uri(params)
    mlflow.set_tracking_uri(uri)
    lineage = describe(MlflowClient(uri), model, uri, params.tracking.model_prefix)
    return json.dumps(lineage, indent=2) if as_json else format_lineage(lineage)
