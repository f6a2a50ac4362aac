"""`cvops rollback`: move @champion back to an earlier blessed version, recorded in the audit trail."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from components.registry.audit import CHAMPION, alias_version, move_alias, registry_lock


class RollbackError(ValueError):
    """The rollback cannot happen; the message says why and what to do."""


def blessed_versions(client: MlflowClient, name: str) -> list[int]:
    """Versions whose gate verdict passed, ascending."""
    versions = client.search_model_versions(f"name='{name}'")
    return sorted(int(v.version) for v in versions if v.tags.get("cvops.gate.passed") == "true")


def _target(client: MlflowClient, name: str, current: str | None, to: str | None) -> str:
    blessed = blessed_versions(client, name)
    if to is None:
        older = [v for v in blessed if current is None or v < int(current)]
        if not older:
            raise RollbackError(f"{name}: no blessed version older than @champion v{current}; "
                                f"blessed versions: {blessed or 'none'}. Name one with --to VERSION.")
        return str(older[-1])
    try:
        client.get_model_version(name, to)
    except MlflowException:
        raise RollbackError(f"{name} has no version {to}; see `cvops history` for the versions") from None
    if int(to) not in blessed:
        raise RollbackError(f"{name} v{to} never passed the gate (cvops.gate.passed is not 'true'); "
                            f"only blessed versions can be champion: {blessed or 'none'}")
    return to


def rollback(client: MlflowClient, tracking_uri: str, name: str, to: str | None = None) -> dict:
    """Point @champion at `to` (default: the newest blessed version older than the current
    champion). Returns the audit entry."""
    with registry_lock(tracking_uri):  # same lock as promotions: no move is lost or interleaved
        current = alias_version(client, name, CHAMPION)
        target = _target(client, name, current, to)
        if target == current:
            raise RollbackError(f"{name}@champion is already v{target}")
        return move_alias(client, name, CHAMPION, target, "rollback", "passed", f"rollback from v{current}")
