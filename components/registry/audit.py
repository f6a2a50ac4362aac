"""The audit trail of alias moves, kept in the registry itself, and the registry lock.

Each alias move is one registered-model tag `cvops.audit.<seq:06d>.<random>` whose value
is a JSON entry {seq, time, who, what, alias, from, to, verdict, reason}; tags travel with the
registered model (any MLflow store, the UI shows them) and appending one never rewrites
another, so no entry is lost to a read-modify-write race.

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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

AUDIT_PREFIX = "cvops.audit."
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


def history(client: MlflowClient, name: str) -> list[dict]:
    """The audit entries of a registered model, oldest first."""
    tags = client.get_registered_model(name).tags
    return [json.loads(tags[k]) for k in sorted(k for k in tags if k.startswith(AUDIT_PREFIX))]


def move_alias(client: MlflowClient, name: str, alias: str, version: str, what: str,
               verdict: str = "", reason: str = "") -> dict:
    """Point `alias` at `version` and append the move to the audit trail. Call it while
    holding `registry_lock`: the sequence number is read then written."""
    previous = alias_version(client, name, alias)
    version = str(version)
    client.set_registered_model_alias(name, alias, version)
    seq = len(history(client, name)) + 1
    entry = {"seq": seq, "time": datetime.now(UTC).isoformat(timespec="seconds"), "who": actor(), "what": what,
             "alias": alias, "from": previous, "to": version, "verdict": verdict, "reason": reason[:500]}
    # the random suffix keeps an entry even if an unlocked writer picked the same seq
    client.set_registered_model_tag(name, f"{AUDIT_PREFIX}{seq:06d}.{uuid.uuid4().hex[:8]}", json.dumps(entry))
    return entry


def format_history(name: str, entries: list[dict]) -> str:
    if not entries:
        return f"{name}: no alias moves recorded"
    rows = [f"{'seq':>4}  {'time (UTC)':25s} {'what':9s} {'alias':11s} {'from':>5} -> {'to':<5} {'verdict':8s} who / reason"]
    for e in entries:
        rows.append(f"{e['seq']:>4}  {e['time']:25s} {e['what']:9s} @{e['alias']:10s} {e['from'] or '-':>5} -> "
                    f"{e['to']:<5} {e['verdict'] or '-':8s} {e['who']}  {e['reason']}")
    return f"{name}: audit trail of alias moves\n" + "\n".join(rows)
