"""The validate stage: the manifest against a Great Expectations suite (the data contract).

A failed expectation stops the pipeline (non-zero exit, so `dvc repro` and the Prefect flow
stop) with a report naming each failed rule, how many rows broke it, example files and the
fix. The summary JSON is a DVC metric either way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from components.config import ContractConfig, Params
from components.paths import StagePaths

SPLITS = ["train", "val", "test"]


class DataContractError(RuntimeError):
    """The dataset broke the data contract; the message is the report."""


@dataclass
class Rule:
    """One expectation, with the words a person needs when it fails."""

    name: str
    expectation: Any
    fix: str
    failures: list[dict[str, Any]] = field(default_factory=list)


def build_rules(cfg: ContractConfig) -> list[Rule]:
    import great_expectations as gx

    E = gx.expectations
    return [
        Rule("images decode", E.ExpectColumnValuesToBeInSet(column="readable", value_set=[True]),
             "re-export or remove the broken files (their error is in the manifest's 'error' column)"),
        Rule("known split", E.ExpectColumnValuesToBeInSet(column="split", value_set=SPLITS),
             "set split to one of train/val/test in the annotations"),
        Rule("every split present", E.ExpectColumnDistinctValuesToContainSet(column="split", value_set=SPLITS),
             "assign some images to each of train, val and test"),
        Rule("allowed format", E.ExpectColumnValuesToBeInSet(column="format", value_set=cfg.formats, mostly=1.0, row_condition='readable==True', condition_parser="pandas"),
             f"convert images to one of {cfg.formats} (or extend contract.formats)"),
        Rule("allowed channels", E.ExpectColumnValuesToBeInSet(column="channels", value_set=cfg.channels, row_condition='readable==True', condition_parser="pandas"),
             f"convert images to {cfg.channels} channels (or extend contract.channels)"),
        Rule("width in bounds", E.ExpectColumnValuesToBeBetween(column="width", min_value=cfg.min_size, max_value=cfg.max_size, row_condition='readable==True', condition_parser="pandas"),
             f"resize images to {cfg.min_size}..{cfg.max_size} px (contract.min_size/max_size)"),
        Rule("height in bounds", E.ExpectColumnValuesToBeBetween(column="height", min_value=cfg.min_size, max_value=cfg.max_size, row_condition='readable==True', condition_parser="pandas"),
             f"resize images to {cfg.min_size}..{cfg.max_size} px (contract.min_size/max_size)"),
        Rule("annotated", E.ExpectColumnValuesToNotBeNull(column="labels"),
             "add the missing annotations"),
        Rule("unique paths", E.ExpectColumnValuesToBeUnique(column="path"),
             "list each image once in the annotations"),
        Rule("no duplicate images", E.ExpectColumnValuesToBeUnique(column="sha256", row_condition='readable==True', condition_parser="pandas"),
             "remove duplicated images (same bytes): within a split they bias, across splits they leak"),
        Rule("enough images", E.ExpectTableRowCountToBeBetween(min_value=cfg.min_images),
             f"provide at least {cfg.min_images} images (contract.min_images)"),
    ]


def validate_manifest(manifest: pd.DataFrame, cfg: ContractConfig) -> list[Rule]:
    """Run the suite over the manifest; returns every rule with its failures filled in."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # one line per run, not 69 bars
    batch = (
        context.data_sources.add_pandas("manifest")
        .add_dataframe_asset("images")
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": manifest})
    )
    rules = build_rules(cfg)
    suite = gx.ExpectationSuite(name="image_contract")
    for rule in rules:
        rule.expectation.meta = {"rule": rule.name}  # GX neither keeps the order nor sets ids here
        suite.add_expectation(rule.expectation)
    by_name = {rule.name: rule for rule in rules}
    result = batch.validate(suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["path"]})
    for outcome in result.results:
        if not outcome.success:
            by_name[outcome.expectation_config.meta["rule"]].failures = _examples(outcome.result, manifest)
    return rules


def _examples(result: dict[str, Any], manifest: pd.DataFrame) -> list[dict[str, Any]]:
    rows = result.get("unexpected_index_list") or []
    if rows:
        return [r if isinstance(r, dict) else {"path": manifest.loc[r, "path"]} for r in rows]
    observed = result.get("observed_value")
    return [{"observed": observed}] if observed is not None else [{}]


def report(rules: list[Rule], manifest_path: Path) -> str:
    failed = [r for r in rules if r.failures]
    lines = [f"Data contract FAILED for {manifest_path}: {len(failed)} of {len(rules)} rules broken."]
    for rule in failed:
        examples = [e.get("path") or e.get("observed") for e in rule.failures[:3]]
        count = len(rule.failures) if "path" in rule.failures[0] else "-"
        lines.append(f"  - {rule.name}: {count} rows; e.g. {examples}\n    fix: {rule.fix}")
    lines.append("Nothing downstream ran and nothing stored was changed. Fix the data, then rerun.")
    return "\n".join(lines)


def read_manifest(path: Path) -> pd.DataFrame:
    """The manifest with typed columns; an unreadable image has empty geometry (NaN)."""
    manifest = pd.read_csv(path, dtype=str, keep_default_na=False)
    manifest["readable"] = manifest["readable"].eq("True")
    manifest["labels"] = manifest["labels"].replace("", None)
    for column in ("channels", "width", "height", "bytes"):
        manifest[column] = pd.to_numeric(manifest[column], errors="coerce")
    return manifest


def run(params: Params, task: str) -> dict[str, Any]:
    paths = StagePaths(task)
    manifest = read_manifest(paths.manifest)
    rules = validate_manifest(manifest, params.task(task).contract)
    summary = {
        "success": not any(r.failures for r in rules),
        "images": len(manifest),
        "rules": len(rules),
        "failed_rules": sum(bool(r.failures) for r in rules),
        **{f"split_{s}": int((manifest["split"] == s).sum()) for s in SPLITS},
    }
    paths.validation.parent.mkdir(parents=True, exist_ok=True)
    paths.validation.write_text(json.dumps(summary, indent=2))
    if not summary["success"]:
        raise DataContractError(report(rules, paths.manifest))
    print(f"data contract passed: {len(rules)} rules on {len(manifest)} images ({paths.manifest})")
    return summary
