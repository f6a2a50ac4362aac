"""The audit trail of alias moves, kept in the registry's own store, and the registry lock.

Each alias move is one JSON file {seq, time, who, what, alias, from, to, verdict, reason},
`audit/<seq:06d>.<random>.json`, in the model's audit run: an MLflow run named
`<model> audit trail` in the experiment of the model's first registered version, found from
the registered model's tag `cvops.audit.run`. Appending one file never rewrites another, so
no entry is lost to a read-modify-write race, and the trail travels with the store (any
MLflow server, its artifact store). The registered model's page stays readable: one tag,
and a description that names the last move and where the trail is (the run's Artifacts tab,
or `cvops history <task>`). Entries written by older versions as registered-model tags
`cvops.audit.<seq>.<random>` are still read.

MLflow has no compare-and-set on aliases, so moves are serialized by `registry_lock`: an
exclusive `fcntl` lock on a file next to the SQLite store (`<db>.cvops.lock`), which every
process on the machine that opens that store sees. For a remote tracking server the lock
is a file under `~/.cache/cvops/locks/` (or CVOPS_REGISTRY_LOCK_DIR, put it on storage all
pipeline hosts share): it relies on all promoting pipelines sharing that directory, or on
promotions running through one Prefect work pool/concurrency limit of 1.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

AUDIT_PREFIX = "cvops.audit."  # tags of entries written before the trail moved to a run (still read)
TRAIL_RUN_TAG = "cvops.audit.run"  # the registered-model tag naming the audit run
TRAIL_DIR = "audit"  # its artifact folder: one file per move
CHAMPION, CHALLENGER = "champion", "challenger"


def lock_path(tracking_uri: str) -> Path:
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix):
        return Path(tracking_uri[len(prefix):] + ".cvops.lock")
    base = Path(os.environ.get("CVOPS_REGISTRY_LOCK_DIR", Path.home() / ".cache" / "cvops" / "locks"))
    return base / f"{hashlib.sha256(tracking_uri.encode()).hexdigest()[:16]}.lock"


@contextmanager
def registry_lock(tracking_uri: str) -> Iterator[None]:
    """Exclusive across processes on this machine (blocks until the holder releases)."""
    path = lock_path(tracking_uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def actor() -> str:
    """Who moved an alias: CVOPS_ACTOR (e.g. set by CI), else user@host."""
    return os.environ.get("CVOPS_ACTOR") or f"{getpass.getuser()}@{socket.gethostname()}"


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)  # int from some stores
    except MlflowException:
        return None


def _legacy_entries(tags: dict[str, str]) -> list[tuple[str, dict]]:
    return [(k[len(AUDIT_PREFIX):], json.loads(v)) for k, v in tags.items()
            if k.startswith(AUDIT_PREFIX) and k[len(AUDIT_PREFIX):][:1].isdigit()]


@contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow draws a download progress bar on stderr: noise in `cvops history` and promote."""
    before = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = before


def history(client: MlflowClient, name: str) -> list[dict]:
    """The audit entries of a registered model, oldest first."""
    tags = client.get_registered_model(name).tags
    entries = _legacy_entries(tags)
    if tags.get(TRAIL_RUN_TAG):
        with tempfile.TemporaryDirectory() as scratch, _no_progress_bar():
            try:
                folder = Path(client.download_artifacts(tags[TRAIL_RUN_TAG], TRAIL_DIR, scratch))
            except (MlflowException, OSError):  # no move recorded in it yet
                folder = Path(scratch) / "none"
            entries += [(p.stem, json.loads(p.read_text())) for p in folder.glob("*.json")]
    return [entry for _, entry in sorted(dict(entries).items())]  # by key: seq, then the random id; one per key


def trail_run(client: MlflowClient, name: str, version: str) -> str:
    """The run holding `name`'s trail, created on the first move (under the lock) in the
    experiment of `version`'s run, finished at once: a record, not a job."""
    run_id = client.get_registered_model(name).tags.get(TRAIL_RUN_TAG)
    if run_id:
        return run_id
    experiment_id = client.get_run(client.get_model_version(name, version).run_id).info.experiment_id
    run = client.create_run(experiment_id, run_name=f"{name} audit trail",
                            tags={"cvops.stage": "audit", "cvops.model": name})
    client.set_terminated(run.info.run_id)
    client.set_registered_model_tag(name, TRAIL_RUN_TAG, run.info.run_id)
    return run.info.run_id


def _move_legacy_entries(client: MlflowClient, name: str, run_id: str) -> None:
    """Entries an older version kept as registered-model tags become files of the run (each
    file written before its tag is deleted: an interruption leaves a duplicate, never a gap)."""
    for key, value in client.get_registered_model(name).tags.items():
        if key.startswith(AUDIT_PREFIX) and key[len(AUDIT_PREFIX):][:1].isdigit():
            client.log_text(run_id, value, f"{TRAIL_DIR}/{key[len(AUDIT_PREFIX):]}.json")
            client.delete_registered_model_tag(name, key)


def _point_at_trail(client: MlflowClient, name: str, run_id: str, entry: dict) -> None:
    """The registered model's description: the last move and where the whole trail is. A
    summary, rewritten on each move; the trail itself is the run's files."""
    run = client.get_run(run_id)
    link = f"#/experiments/{run.info.experiment_id}/runs/{run_id}/artifacts"
    # code spans: MLflow's GitHub-flavoured markdown links a bare @name to github.com/name
    last = (f"#{entry['seq']} {entry['time']}: {entry['what']} `@{entry['alias']}` v{entry['from'] or '-'} -> v{entry['to']} "
            f"({entry['verdict'] or '-'}) by `{entry['who']}`")
    client.update_registered_model(name, description=(
        f"Last alias move: {last}.\n\nEvery move (who, when, which verdict): the [audit trail run]({link}), "
        f"files {TRAIL_DIR}/*.json, or `cvops history <task>`."))


def move_alias(client: MlflowClient, name: str, alias: str, version: str, what: str,
               verdict: str = "", reason: str = "") -> dict:
    """Point `alias` at `version` and append the move to the audit trail. Call it while
    holding `registry_lock`: the sequence number is read then written."""
    previous = alias_version(client, name, alias)
    version = str(version)
    client.set_registered_model_alias(name, alias, version)
    run_id = trail_run(client, name, version)
    _move_legacy_entries(client, name, run_id)
    seq = len(history(client, name)) + 1
    entry = {"seq": seq, "time": datetime.now(UTC).isoformat(timespec="seconds"), "who": actor(), "what": what,
             "alias": alias, "from": previous, "to": version, "verdict": verdict, "reason": reason[:500]}
    # the random suffix keeps an entry even if an unlocked writer picked the same seq
    client.log_text(run_id, json.dumps(entry, indent=1), f"{TRAIL_DIR}/{seq:06d}.{uuid.uuid4().hex[:8]}.json")
    _point_at_trail(client, name, run_id, entry)
    return entry


def format_history(name: str, entries: list[dict]) -> str:
    if not entries:
        return f"{name}: no alias moves recorded"
    rows = [f"{'seq':>4}  {'time (UTC)':25s} {'what':9s} {'alias':11s} {'from':>5} -> {'to':<5} {'verdict':8s} who / reason"]
    for e in entries:
        rows.append(f"{e['seq']:>4}  {e['time']:25s} {e['what']:9s} @{e['alias']:10s} {e['from'] or '-':>5} -> "
                    f"{e['to']:<5} {e['verdict'] or '-':8s} {e['who']}  {e['reason']}")
    return f"{name}: audit trail of alias moves\n" + "\n".join(rows)
