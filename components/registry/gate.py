"""The promotion gate: a table of checks, failing closed.

Value checks compare the candidate's metrics with fixed bounds; change checks compare them
with the current @champion's metrics, measured by the same evaluation suite on the same test
data. The change check on the task's monitor metric is decided on a paired bootstrap
interval of (candidate - champion) over the test images: it passes only when the interval's
worse end is within the tolerance (`min_delta`), so a regression larger than the tolerance
cannot pass by the luck of one test split. No checks configured is a configuration error
(never a silent pass); a metric the evaluation did not produce, for the candidate or the
champion, is a failed check.

`gate_rows` is the one rendering of a verdict's checks (gate.json, version tags, model card,
Prefect artifact and `cvops history` all show it).
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
class Baseline:
    """The champion's side of the change checks."""
    metrics: dict[str, float]
    source: str  # how they were measured: "stored evaluation (key ...)" or "re-evaluated ..."
    paired: dict | None = None  # paired_bootstrap of the monitor: difference, low, high, samples, ...


@dataclass(frozen=True)
class Check:
    metric: str
    rule: str  # e.g. ">= 0.9" or "change (higher) >= -0.005"
    value: float | None  # the candidate's value
    passed: bool
    note: str = ""
    baseline: float | None = None  # the champion's value, for change checks
    interval: list[float] | None = None  # paired bootstrap interval of the change (improvement direction)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    checks: list[Check]
    reason: str
    champion: str | None = None  # the champion version the change checks ran against
    champion_source: str = ""  # how the champion's metrics were obtained
    servable: tuple[str, ...] = ()  # what may be deployed: torch, and each export format whose rules passed

    def as_dict(self) -> dict:
        return {"passed": self.passed, "reason": self.reason, "baseline_version": self.champion,
                "champion_source": self.champion_source, "servable": list(self.servable),
                "checks": [asdict(c) for c in self.checks]}

    def table(self) -> str:
        return gate_table(self.as_dict())


# ---- the one renderer ------------------------------------------------------------------------

def _fmt(value: float | None, missing: str) -> str:
    return missing if value is None else f"{value:.4f}"


def gate_rows(verdict: dict) -> list[dict[str, str]]:
    """A verdict (as stored in gate.json) as rows of strings: check, rule, champion,
    candidate, interval, pass. Every view of a verdict renders these rows."""
    rows = []
    for c in verdict.get("checks", []):
        change = "change" in c["rule"]
        interval = c.get("interval")
        rows.append({
            "check": c["metric"], "rule": c["rule"],
            "champion": _fmt(c.get("baseline"), "missing" if change else "-"),
            "candidate": _fmt(c.get("value"), "missing"),
            "interval": f"[{interval[0]:+.4f}, {interval[1]:+.4f}]" if interval else "-",
            "pass": "yes" if c["passed"] else "**no**",
        })
    return rows


def gate_table(verdict: dict) -> str:
    """Markdown table of `gate_rows`, headed by how the champion was measured."""
    rows = gate_rows(verdict)
    header = ["check", "rule", "champion", "candidate", "interval", "pass"]
    lines = [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}"]
    lines += [f"| {' | '.join(r[h] for h in header)} |" for r in rows]
    source = verdict.get("champion_source")
    if verdict.get("baseline_version") and source:
        lines.append(f"\nChampion v{verdict['baseline_version']}: {source}.")
    return "\n".join(lines)


# ---- checks ------------------------------------------------------------------------------------

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


def change_check(t: ChangeThreshold, metrics: dict[str, float], champion: dict[str, float],
                 paired: dict | None = None) -> Check:
    """Improvement in `t.direction` (positive = better) against the champion's value. With
    `paired` (the bootstrap of candidate - champion), `min_delta` applies to the interval's
    worse end: the candidate passes only if the data rule out a regression beyond it."""
    parts = [f"change ({t.direction}) >= {t.min_delta:+g}" if t.min_delta is not None else "",
             f"relative change ({t.direction}) >= {t.min_relative_delta:+.2%}" if t.min_relative_delta is not None else ""]
    if paired is not None and t.min_delta is not None:
        parts[0] = f"change ({t.direction}), {paired['confidence']:.0%} paired-bootstrap low end >= {t.min_delta:+g}"
    rule = " and ".join(p for p in parts if p)
    value, baseline = metrics.get(t.metric), champion.get(t.metric)
    if value is None or baseline is None:
        who = "candidate" if value is None else "champion"
        return Check(t.metric, rule, value, False, _missing(metrics if value is None else champion, who), baseline)
    sign = 1 if t.direction == "higher" else -1
    change = sign * (value - baseline)
    relative = change / abs(baseline) if baseline != 0 else (0.0 if change == 0 else float("inf") * change)
    interval = None
    if paired is not None:  # the resamples' spread around the reported change (metrics.json's values:
        # the same numbers for real evaluations, and the ones tests construct)
        spread = [sign * (paired[end] - paired["difference"]) for end in ("low", "high")]
        interval = sorted(change + s for s in spread)
    worst = interval[0] if interval else change
    ok = (t.min_delta is None or worst >= t.min_delta) and (t.min_relative_delta is None or relative >= t.min_relative_delta)
    note = f"change {change:+.4f} ({relative:+.2%})" + (f", interval [{interval[0]:+.4f}, {interval[1]:+.4f}] over "
                                                        f"{paired['images']} images" if interval else "")
    return Check(t.metric, rule, value, ok, note, baseline, interval)


def evaluate_gate(gate: GateConfig, metrics: dict[str, float], task: str,
                  champion: dict[str, float] | Baseline | None = None, champion_version: str | None = None,
                  monitor: str | None = None) -> Verdict:
    """The verdict on a candidate. `champion` is the current champion's evaluation on the
    same test data (a Baseline, or bare metrics), or None when there is no champion (cold
    start). The change check on `monitor` uses the Baseline's paired bootstrap when present."""
    check_config(gate, task)
    checks = [value_check(t, metrics) for t in gate.thresholds]
    baseline = champion if isinstance(champion, Baseline) or champion is None else Baseline(champion, "")
    if baseline is not None:
        checks += [change_check(t, metrics, baseline.metrics, baseline.paired if t.metric == monitor else None)
                   for t in gate.changes]
    elif gate.cold_start == "refuse":
        return Verdict(False, checks, "no champion yet and gate.cold_start is 'refuse'")
    source = baseline.source if baseline else ""
    failed = [c.metric for c in checks if not c.passed]
    artifacts, servable = servable_formats(gate, metrics)
    if failed:  # each metric once, in the table's order
        return Verdict(False, checks + artifacts, f"failed checks: {', '.join(dict.fromkeys(failed))}", champion_version, source)
    refused = [c.metric for c in artifacts if not c.passed]
    reason = "all checks passed" + (f"; not servable: {', '.join(sorted(set(EXPORTED) - set(servable)))} "
                                    f"({', '.join(refused)})" if refused else "")
    return Verdict(True, checks + artifacts, reason, champion_version, source, ("torch", *servable))


EXPORTED = ("onnx-fp32", "onnx-int8")  # what the export stage ships, as `cvops predict --runtime` names them


def servable_formats(gate: GateConfig, metrics: dict[str, float]) -> tuple[list[Check], list[str]]:
    """The artifact rules' checks (gate.servable, on export/<format>/... metrics) and the
    exported formats that may be served: exported (its export/<format>/drop was measured) and
    every rule on it passed. A failed artifact rule refuses that artifact, not the model."""
    exported = {k.split("/")[1] for k in metrics if k.startswith("export/") and k.endswith("/drop")}
    checks = []
    for t in gate.servable:  # rules on a format that was not exported (export off, or INT8 off) do not apply
        fmt = t.metric.split("/")[1] if t.metric.startswith("export/") else ""
        if fmt in exported:
            c = value_check(t, metrics)
            checks.append(Check(c.metric, f"{c.rule} (else onnx-{fmt} is not served)", c.value, c.passed, c.note))
    servable = [name for name in EXPORTED
                if f"export/{name.removeprefix('onnx-')}/drop" in metrics
                and all(c.passed for c in checks if c.metric.startswith(f"export/{name.removeprefix('onnx-')}/"))]
    return checks, servable
