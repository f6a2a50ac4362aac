"""The validate stage: the data contract (Great Expectations) over the manifests.

Three tables (components/data/contract_rules.py): images (manifest.csv), annotations
(annotations.csv) and stats (split, class and group counts). A failed rule stops the
pipeline (DataContractError: exit code 3, so `dvc repro` and the Prefect flow stop and
nothing downstream runs) with a report naming each failed rule, how many rows broke it,
example files and the fix. Either way the summary JSON (a DVC metric) and the GX Data Docs
(HTML, reports/<task>/data_docs/, with their scripts and styles local: they open offline)
are written and logged to MLflow (run `<task>-validate`).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.config import ContractConfig, Params
from components.data.contract_rules import INDEX, SPLITS, Rule, build_rules, stats_table
from components.data.manifest import annotations_path
from components.data.near_duplicates import twins_across
from components.errors import DataContractError
from components.paths import StagePaths, write_metrics
from components.runtime.offline_html import localize_data_docs
from components.tasks import get_task
from components.tasks.base import TaskSpec

DOCS_SITE = "contract"


def near_duplicates(frame: pd.DataFrame, distance: int) -> pd.Series:
    """Per image, the path of an image in another split whose perceptual hash is within
    `distance` bits ("" when none): the same picture re-encoded, resized or recompressed
    (the lowest-listed such image; pairs from the index in data/near_duplicates.py)."""
    found = pd.Series("", index=frame.index, dtype=object)
    hashed = frame[frame["phash"].str.fullmatch(r"[0-9a-f]{16}")]
    if len(hashed) < 2:
        return found
    bits = np.array([int(h, 16) for h in hashed["phash"]], dtype=np.uint64)
    twin = twins_across(bits, hashed["split"].to_numpy(), distance)
    has = twin >= 0
    found.loc[hashed.index[has]] = hashed["path"].to_numpy()[twin[has]]
    return found


def read_manifest(path: Path, near_distance: int | None = 2) -> pd.DataFrame:
    """manifest.csv typed; unreadable images have empty geometry (NaN). Adds `hash_splits`:
    how many splits hold an image with the same bytes, and `near_duplicate`: a perceptually
    identical image in another split (the leakage rules' columns)."""
    manifest = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in ("readable", "in_root"):
        manifest[column] = manifest[column].eq("True")
    for column in ("annotations", "channels", "width", "height", "bytes"):
        manifest[column] = pd.to_numeric(manifest[column], errors="coerce")
    hashed = manifest["sha256"].ne("")
    manifest["hash_splits"] = 1
    manifest.loc[hashed, "hash_splits"] = manifest[hashed].groupby("sha256")["split"].transform("nunique")
    manifest["near_duplicate"] = "" if near_distance is None else near_duplicates(manifest, near_distance)
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
    if cfg.classes is not None or not meta.exists():
        return cfg.classes
    try:
        classes = json.loads(meta.read_text(encoding="utf-8-sig")).get("classes")
    except (ValueError, AttributeError) as exc:
        raise DataContractError(f"{meta}: not a JSON object with a 'classes' list ({exc}); "
                                'fix: write {"classes": ["<class>", ...]} or set contract.classes') from None
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) and c for c in classes)
                                    and len(set(classes)) == len(classes)):
        raise DataContractError(f"{meta}: 'classes' must be a list of distinct non-empty names, got {str(classes)[:80]}; "
                                "fix: list each class name once")
    return classes


def class_labels(annotations: pd.DataFrame, spec: TaskSpec, classes: list[str]) -> pd.DataFrame:
    """(split, label): one class name per label, box or mask value; a mask value indexes
    spec.class_names()."""
    names = spec.class_names(classes)
    values = annotations[annotations["kind"] == "mask_value"]
    from_masks = values.assign(label=values["value"].map(lambda v: names[int(v)] if 0 <= v < len(names) else ""))
    labelled = annotations[annotations["kind"].isin(["label", "box"])]
    return pd.concat([labelled[["split", "label"]], from_masks[["split", "label"]]])


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
        if left := localize_data_docs(docs_dir):  # GX newer than the lock: a CDN file not vendored yet
            print(f"warning: Data Docs still load {left} from the internet; vendor them "
                  "(components/runtime/web_assets/README.md)", file=sys.stderr)
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
    images = read_manifest(manifest, cfg.near_duplicate_distance)
    annotations = read_annotations(annotations_path(manifest))
    # masks hold class indices: without a class list there are no names to count or check
    needs_list = classes is None and bool((annotations["kind"] == "mask_value").any())
    counted = classes if classes is not None else [] if needs_list else sorted(
        set(class_labels(annotations, spec, [])["label"]) - {""})
    tables = {"images": images, "annotations": annotations,
              "stats": stats_table(images, class_labels(annotations, spec, counted), counted, declared=not needs_list)}
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
    cfg = params.task(task)
    contract = cfg.contract  # built-in data too: their splits keep near-duplicates together (prepare)
    rules, summary = validate_dataset(paths.data, paths.manifest, get_task(task), contract, docs_dir)
    paths.validation.write_text(json.dumps(summary, indent=2))
    write_metrics(paths.validation_metrics, summary)
    ok = f"data contract passed: {len(rules)} rules on {summary['images']} images ({paths.manifest}); docs {docs_dir}/index.html"
    message = ok if summary["success"] else report(rules, paths.manifest)
    _log_to_mlflow(params, task, summary, docs_dir, message)
    if not summary["success"]:
        raise DataContractError(f"{message}\n  Data Docs: {docs_dir / 'index.html'}")
    print(message)
    return summary
