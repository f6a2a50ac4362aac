"""A registered version's record: its lineage, the gate's verdict and its evaluation key.

MLflow's model page lists every version tag in the versions table, so ~36 lineage and gate
tags made each row a screen tall. A version keeps as tags only what a person filters on
(`search_model_versions("tags.`cvops.git_commit` = '...'")`) or a reader needs without a
download; the rest is one JSON artifact in the version's run (`registry/v<N>.json`), named
by the `cvops.record` tag. `read_record` merges both, so versions registered before the
record existed (every field a tag) read the same way.
"""

from __future__ import annotations

import json

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from components.runtime.tracking import read_artifact_text

RECORD_TAG = "cvops.record"
# kept as tags: the verdict (rollback reads it), the servable formats (predict reads them),
# and what one filters versions by: commit, data, DVC experiment, Prefect flow run
FILTER_TAGS = ("cvops.gate.passed", "cvops.servable", "cvops.git_commit", "cvops.data_hash",
               "cvops.dvc_experiment", "cvops.prefect_flow_run_id")


def record_path(version: str) -> str:
    return f"registry/v{version}.json"


def filter_tags(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k in FILTER_TAGS}


def read_record(client: MlflowClient, mv: ModelVersion) -> dict[str, str]:
    """Every field of a version: its record artifact's and its tags."""
    stored: dict[str, str] = {}
    if path := mv.tags.get(RECORD_TAG):
        try:
            stored = json.loads(read_artifact_text(client, mv.run_id, path))
        except (MlflowException, OSError, ValueError) as exc:
            print(f"cvops: {mv.name} v{mv.version}: its record {path} is unreadable ({exc}); showing its tags only")
    return {**stored, **mv.tags}


def write_record(client: MlflowClient, name: str, version: str, fields: dict[str, str]) -> None:
    """Merge `fields` into the version's record (an artifact of its run), set the ones in
    FILTER_TAGS as tags, and the tag naming the record."""
    mv = client.get_model_version(name, version)
    record = {k: v for k, v in read_record(client, mv).items() if k != RECORD_TAG} | fields
    client.log_text(mv.run_id, json.dumps(record, indent=1, sort_keys=True), record_path(version))
    for key, value in {**filter_tags(fields), RECORD_TAG: record_path(version)}.items():
        client.set_model_version_tag(name, version, key, value)
