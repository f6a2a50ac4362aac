"""The validate stage: the data contract (Great Expectations) over the manifests.

Three tables (components/data/contract_rules.py): images (manifest.csv), annotations
(annotations.csv) and stats (split, class and group counts). A failed rule stops the
pipeline (DataContractError: exit code 3, so `dvc repro` and the Prefect flow stop and
nothing downstream runs) with a report naming each failed rule, how many rows broke it,
example files and the fix. Either way the summary JSON (a DVC metric) and the GX Data Docs
(HTML, reports/<task>/data_docs/) are written and logged to MLflow (run `<task>-validate`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from components.config import ContractConfig, Params
from components.data.contract_rules import INDEX, SPLITS, Rule, build_rules, stats_table
from components.data.manifest import annotations_path
from components.errors import DataContractError
from components.paths import StagePaths
from components.tasks import get_task
from components.tasks.base import TaskSpec

DOCS_SITE = "contract"


def read_manifest(path: Path) -> pd.DataFrame:
    """manifest.csv typed; unreadable images have empty geometry (NaN). Adds `hash_splits`:
    how many splits hold an image with the same bytes (the leakage rule's column)."""
    manifest = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in ("readable", "in_root"):
        manifest[column] = manifest[column].eq("True")
    for column in ("annotations", "channels", "width", "height", "bytes"):
        manifest[column] = pd.to_numeric(manifest[column], errors="coerce")
    hashed = manifest["sha256"].ne("")
    manifest["hash_splits"] = 1
    manifest.loc[hashed, "hash_splits"] = manifest[hashed].groupby("sha256")["split"].transform("nunique")
    return manifest


def read_annotations(path: Path) -> pd.DataFrame:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in ("image_readable", "file_in_root", "file_readable"):
        table[column] = table[column].eq("True")
    for column in ("value", "x1", "y1", "x2", "y2", "area", "image_width", "image_height", "file_width", "file_height"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    return table


def declared_classes(root: Path, cfg: ContractConfig) -> list[str] | None:
    """contract.classes, else dataset.json's 'classes', else None (class rules are skipped)."""
    meta = root / "dataset.json"
    if cfg.classes is None and meta.exists():
        return json.loads(meta.read_text()).get("classes")
    return cfg.classes


def class_labels(annotations: pd.DataFrame, spec: TaskSpec, classes: list[str]) -> pd.Series:
    """One class name per label, box or mask value; a mask value indexes spec.class_names()."""
    names = spec.class_names(classes)
    values = annotations.loc[annotations["kind"] == "mask_value", "value"]
    from_masks = values.map(lambda v: names[int(v)] if 0 <= v < len(names) else "")
    return pd.concat([annotations.loc[annotations["kind"].isin(["label", "box"]), "label"], from_masks])


def check(tables: dict[str, pd.DataFrame], rules: list[Rule], name: str, docs_dir: Path | None) -> list[Rule]:
    """Run each table's suite (a GX ValidationDefinition, so it shows in Data Docs written to
    `docs_dir`); fills in every rule's failures and returns the rules."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # one line per run, not 69 bars
    if docs_dir is not None:
        context.add_data_docs_site(site_name=DOCS_SITE, site_config={
            "class_name": "SiteBuilder", "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())},
        })
    source = context.data_sources.add_pandas("manifests")
    by_name = {rule.name: rule for rule in rules}
    for table, frame in tables.items():
        suite = gx.ExpectationSuite(name=f"{name}_{table}")
        for rule in (r for r in rules if r.table == table):
            for expectation in rule.expectations:
                expectation.meta = {"rule": rule.name}  # GX neither keeps the order nor sets ids here
                suite.add_expectation(expectation)
        suite = context.suites.add(suite)  # after filling it: adding to a stored suite saves each time
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=f"{name}_{table}", data=batch, suite=suite))
        result = definition.run(batch_parameters={"dataframe": frame}, result_format={
            "result_format": "COMPLETE", "unexpected_index_column_names": [INDEX[table]]})
        for outcome in result.results:
            if not outcome.success:
                by_name[outcome.expectation_config.meta["rule"]].failures += _examples(outcome.result, frame, INDEX[table])
    if docs_dir is not None:
        context.build_data_docs(site_names=[DOCS_SITE])
    return rules


def _examples(result: dict[str, Any], frame: pd.DataFrame, index: str) -> list[dict[str, Any]]:
    rows = result.get("unexpected_index_list") or []
    if rows:
        return [r if isinstance(r, dict) else {index: frame.loc[r, index]} for r in rows]
    return [{"observed": result.get("observed_value")}]


def report(rules: list[Rule], where: Path) -> str:
    """People-readable: every failed rule with its row count, example files and the fix."""
    failed = [r for r in rules if r.failures]
    lines = [f"Data contract FAILED for {where}: {len(failed)} of {len(rules)} rules broken."]
    for rule in failed:
        keys = list(dict.fromkeys(e.get("path") or e.get("key") or f"observed {e.get('observed')}" for e in rule.failures))
        count = len(keys) if "observed" not in rule.failures[0] else "-"
        lines.append(f"  - {rule.name}: {count} rows; e.g. {keys[:3]}\n    fix: {rule.fix}")
    lines.append("Nothing downstream ran and nothing stored was changed. Fix the data (or the rule in "
                 "params.yaml tasks.<task>.contract, `skip` to remove one), then rerun `dvc repro`.")
    return "\n".join(lines)


def summarize(rules: list[Rule], tables: dict[str, pd.DataFrame], classes: list[str] | None) -> dict[str, Any]:
    images = tables["images"]
    failed = {r.name: len({str(e) for e in r.failures}) for r in rules if r.failures}
    return {
        "success": not failed, "images": len(images), "annotations": len(tables["annotations"]),
        "rules": len(rules), "failed_rules": len(failed), "failures": failed,
        "classes_declared": classes is not None,
        **{f"split_{s}": int((images["split"] == s).sum()) for s in SPLITS},
    }


def validate_dataset(root: Path, manifest: Path, spec: TaskSpec, cfg: ContractConfig,
                     docs_dir: Path | None = None) -> tuple[list[Rule], dict[str, Any]]:
    """The whole contract over a dataset's manifests: (rules with failures, summary)."""
    classes = declared_classes(root, cfg)
    mask_values = None if classes is None else [*range(len(spec.class_names(classes))), cfg.ignore_index]
    images, annotations = read_manifest(manifest), read_annotations(annotations_path(manifest))
    counted = classes if classes is not None else sorted(set(class_labels(annotations, spec, [])) - {""})
    tables = {"images": images, "annotations": annotations,
              "stats": stats_table(images, class_labels(annotations, spec, counted), counted)}
    rules = check(tables, build_rules(cfg, classes, mask_values), spec.name, docs_dir)
    return rules, summarize(rules, tables, classes)


def _log_to_mlflow(params: Params, task: str, summary: dict[str, Any], docs_dir: Path, message: str) -> None:
    import mlflow

    from components.runtime import tracking

    tracking.setup(params, task)
    with mlflow.start_run(run_name=tracking.run_name(task, "validate")):
        mlflow.set_tags({"task": task, "stage": "validate", "contract": "passed" if summary["success"] else "failed"})
        mlflow.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, int | float)})
        mlflow.log_dict(summary, "validation.json")
        mlflow.log_text(message, "contract_report.txt")
        mlflow.log_artifacts(str(docs_dir), "data_docs")


def run(params: Params, task: str) -> dict[str, Any]:
    paths = StagePaths(task)
    docs_dir = paths.validation.parent / "data_docs"
    shutil.rmtree(docs_dir, ignore_errors=True)
    docs_dir.mkdir(parents=True)
    rules, summary = validate_dataset(paths.data, paths.manifest, get_task(task), params.task(task).contract, docs_dir)
    paths.validation.write_text(json.dumps(summary, indent=2))
    ok = f"data contract passed: {len(rules)} rules on {summary['images']} images ({paths.manifest}); docs {docs_dir}/index.html"
    message = ok if summary["success"] else report(rules, paths.manifest)
    _log_to_mlflow(params, task, summary, docs_dir, message)
    if not summary["success"]:
        raise DataContractError(f"{message}\n  Data Docs: {docs_dir / 'index.html'}")
    print(message)
    return summary
