"""The promotion gate: a table of checks, failing closed.

No thresholds configured is a configuration error (never a silent pass); a metric the
evaluation did not produce is a failed check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from components.config import ConfigError, GateConfig


@dataclass(frozen=True)
class Check:
    metric: str
    rule: str  # e.g. ">= 0.9"
    value: float | None
    passed: bool
    note: str = ""


@dataclass(frozen=True)
class Verdict:
    passed: bool
    checks: list[Check]
    reason: str

    def as_dict(self) -> dict:
        return {"passed": self.passed, "reason": self.reason, "checks": [asdict(c) for c in self.checks]}

    def table(self) -> str:
        return checks_table(self.as_dict()["checks"])


def checks_table(checks: list[dict]) -> str:
    """Markdown table of a verdict's checks (as stored in gate.json)."""
    rows = ["| metric | rule | value | pass |", "|---|---|---|---|"]
    for c in checks:
        value = "missing" if c["value"] is None else f"{c['value']:.4f}"
        rows.append(f"| {c['metric']} | {c['rule']} | {value} | {'yes' if c['passed'] else '**no**'} |")
    return "\n".join(rows)


def evaluate_gate(gate: GateConfig, metrics: dict[str, float], task: str, has_champion: bool) -> Verdict:
    if not gate.thresholds:
        raise ConfigError(
            f"params.yaml: tasks.{task}.gate.thresholds is empty; the gate fails closed. "
            f"Add at least one, e.g. `- {{metric: <name>, min: 0.9}}` with a metric from the evaluation."
        )
    checks = []
    for t in gate.thresholds:
        value = metrics.get(t.metric)
        rule = " and ".join(r for r in (f">= {t.min}" if t.min is not None else "", f"<= {t.max}" if t.max is not None else "") if r)
        if value is None:
            checks.append(Check(t.metric, rule, None, False, f"metric missing; evaluation produced: {', '.join(sorted(metrics))}"))
            continue
        ok = (t.min is None or value >= t.min) and (t.max is None or value <= t.max)
        checks.append(Check(t.metric, rule, value, ok))
    failed = [c.metric for c in checks if not c.passed]
    if not has_champion and gate.cold_start == "refuse":
        return Verdict(False, checks, "no champion yet and gate.cold_start is 'refuse'")
    if failed:
        return Verdict(False, checks, f"failed checks: {', '.join(failed)}")
    return Verdict(True, checks, "all checks passed")
