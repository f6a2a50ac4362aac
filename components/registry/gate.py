"""The promotion gate: a table of checks, failing closed.

Value checks compare the candidate's metrics with fixed bounds; change checks compare them
with the current @champion's metrics, re-evaluated by the same code on the same test data.
No checks configured is a configuration error (never a silent pass); a metric the
evaluation did not produce, for the candidate or the champion, is a failed check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from components.config import ChangeThreshold, ConfigError, GateConfig, Threshold


@dataclass(frozen=True)
class Candidate:
    """A trained model up for promotion: its run, logged model, test metrics and lineage."""
    task: str
    name: str  # registered model, cvops-<task>
    model_uri: str  # the run's logged pyfunc
    run_id: str
    metrics: dict[str, float]
    tags: dict[str, str]  # lineage


@dataclass(frozen=True)
class Check:
    metric: str
    rule: str  # e.g. ">= 0.9" or "change (higher) >= -0.005"
    value: float | None  # the candidate's value
    passed: bool
    note: str = ""
    baseline: float | None = None  # the champion's value, for change checks


@dataclass(frozen=True)
class Verdict:
    passed: bool
    checks: list[Check]
    reason: str
    champion: str | None = None  # the champion version the change checks ran against

    def as_dict(self) -> dict:
        return {"passed": self.passed, "reason": self.reason, "baseline_version": self.champion,
                "checks": [asdict(c) for c in self.checks]}

    def table(self) -> str:
        return checks_table(self.as_dict()["checks"])


def _fmt(value: float | None, missing: str) -> str:
    return missing if value is None else f"{value:.4f}"


def checks_table(checks: list[dict]) -> str:
    """Markdown table of a verdict's checks (as stored in gate.json)."""
    rows = ["| metric | threshold | baseline (champion) | candidate | pass |", "|---|---|---|---|---|"]
    for c in checks:
        baseline = _fmt(c.get("baseline"), "missing" if "change" in c["rule"] else "-")
        rows.append(f"| {c['metric']} | {c['rule']} | {baseline} | {_fmt(c['value'], 'missing')} | "
                    f"{'yes' if c['passed'] else '**no**'} |")
    return "\n".join(rows)


def check_config(gate: GateConfig, task: str) -> None:
    """Raise before anything is registered when the gate would check nothing."""
    where = f"params.yaml: tasks.{task}.gate"
    if not gate.thresholds and not gate.changes:
        raise ConfigError(
            f"{where}.thresholds is empty; the gate fails closed. "
            f"Add at least one, e.g. `- {{metric: <name>, min: 0.9}}` with a metric from the evaluation."
        )
    if not gate.thresholds and gate.cold_start == "promote":
        raise ConfigError(
            f"{where}: cold_start is 'promote' but there are no value thresholds, so a first model would be "
            f"promoted with no checks. Add `thresholds` or set `cold_start: refuse`."
        )


def _missing(metrics: dict[str, float], who: str) -> str:
    return f"metric missing from the {who}'s evaluation; it produced: {', '.join(sorted(metrics)) or 'nothing'}"


def value_check(t: Threshold, metrics: dict[str, float]) -> Check:
    rule = " and ".join(r for r in (f">= {t.min}" if t.min is not None else "",
                                    f"<= {t.max}" if t.max is not None else "") if r)
    value = metrics.get(t.metric)
    if value is None:
        return Check(t.metric, rule, None, False, _missing(metrics, "candidate"))
    return Check(t.metric, rule, value, (t.min is None or value >= t.min) and (t.max is None or value <= t.max))


def change_check(t: ChangeThreshold, metrics: dict[str, float], champion: dict[str, float]) -> Check:
    """Improvement in `t.direction` (positive = better) against the champion's value."""
    parts = [f"change ({t.direction}) >= {t.min_delta:+g}" if t.min_delta is not None else "",
             f"relative change ({t.direction}) >= {t.min_relative_delta:+.2%}" if t.min_relative_delta is not None else ""]
    rule = " and ".join(p for p in parts if p)
    value, baseline = metrics.get(t.metric), champion.get(t.metric)
    if value is None or baseline is None:
        who = "candidate" if value is None else "champion"
        return Check(t.metric, rule, value, False, _missing(metrics if value is None else champion, who), baseline)
    change = (value - baseline) if t.direction == "higher" else (baseline - value)
    relative = change / abs(baseline) if baseline != 0 else (0.0 if change == 0 else float("inf") * change)
    ok = (t.min_delta is None or change >= t.min_delta) and (t.min_relative_delta is None or relative >= t.min_relative_delta)
    return Check(t.metric, rule, value, ok, f"change {change:+.4f} ({relative:+.2%})", baseline)


def evaluate_gate(gate: GateConfig, metrics: dict[str, float], task: str,
                  champion: dict[str, float] | None = None, champion_version: str | None = None) -> Verdict:
    """The verdict on a candidate. `champion` is the current champion's metrics on the same
    test data, or None when there is no champion (cold start)."""
    check_config(gate, task)
    checks = [value_check(t, metrics) for t in gate.thresholds]
    if champion is not None:
        checks += [change_check(t, metrics, champion) for t in gate.changes]
    elif gate.cold_start == "refuse":
        return Verdict(False, checks, "no champion yet and gate.cold_start is 'refuse'")
    failed = [c.metric for c in checks if not c.passed]
    if failed:
        return Verdict(False, checks, f"failed checks: {', '.join(dict.fromkeys(failed))}", champion_version)  # each metric once
    return Verdict(True, checks, "all checks passed", champion_version)
