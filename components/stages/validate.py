"""The validate stage: the data contract (Great Expectations) over the manifests.

Three tables (components/data/contract_rules.py): images (manifest.csv), annotations
(annotations.csv) and stats (split, class and group counts). A failed rule stops the
pipeline (DataContractError: exit code 3, so `dvc repro` and the Prefect flow stop and
nothing downstream runs) with a report naming each failed rule, how many rows broke it,
example files and the fix. Either way the summary JSON (a DVC metric) and the GX Data Docs
(HTML, reports/<task>/data_docs/, with their scripts and styles local: they open offline)
are written and logged to MLflow (run `<task>-validate`).

Memory does not grow with the dataset (issue 18): the manifests are read ROWS rows at a time.
A first pass over manifest.csv keeps a few numbers per row and computes the dataset-wide
columns (data/contract_columns.py: copies of a path, of an image in a split, splits per
image, near-duplicate twins) and the stats table's counts; then each chunk of manifest.csv
and of annotations.csv runs its table's suite (one GX run per chunk: one validation result
per chunk in Data Docs). Per rule only the first EXAMPLES failed rows are kept, with 64-bit
hashes of the distinct failed rows and files, so the counts stay exact.
"""

from __future__ import annotations

import gc
import json
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.config import ContractConfig, Params
from components.data.contract_columns import DatasetColumns, hash_strings, read_chunks, scan
from components.data.contract_rules import INDEX, SPLITS, Rule, build_rules, stats_table
from components.data.manifest import annotations_path
from components.errors import DataContractError
from components.paths import StagePaths, write_metrics
from components.runtime.offline_html import localize_data_docs
from components.tasks import get_task
from components.tasks.base import TaskSpec

DOCS_SITE = "contract"
ROWS = 50_000  # rows per chunk: GX's fixed cost per run amortised, ~70 MB per chunk under GX
EXAMPLES = 20  # failed rows kept per rule (the report names 3; Data Docs show GX's 20)
IMAGE_NUMBERS = ("annotations", "channels", "width", "height", "bytes")
ANNOTATION_NUMBERS = ("value", "x1", "y1", "x2", "y2", "area", "image_width", "image_height", "file_width", "file_height")


def _typed(chunk: pd.DataFrame, flags: tuple[str, ...], numbers: tuple[str, ...], start: int) -> pd.DataFrame:
    """A chunk of strings typed: flags as booleans, numbers as floats (NaN when empty: always
    float, so a value prints the same in every chunk), and `line`, the CSV line number."""
    for column in flags:
        chunk[column] = chunk[column].eq("True")
    for column in numbers:
        chunk[column] = pd.to_numeric(chunk[column], errors="coerce").astype(float)
    chunk["line"] = np.arange(start + 2, start + 2 + len(chunk))  # the header is line 1
    return chunk


def image_chunks(manifest: Path, columns: DatasetColumns, rows: int = ROWS) -> Iterator[pd.DataFrame]:
    """manifest.csv typed, `rows` rows at a time (unreadable images have empty geometry:
    NaN), with the dataset-wide columns of `columns` (from `scan` of the same file): the
    copies of each path, of each image in its split, `hash_splits` (splits holding the same
    bytes) and `near_duplicate` (the path of a perceptually identical image in another
    split, "" when none)."""
    start = 0
    for chunk in read_chunks(manifest, rows):
        stop = start + len(chunk)
        chunk = _typed(chunk, ("readable", "in_root"), IMAGE_NUMBERS, start)
        chunk["path_copies"] = columns.path_copies[start:stop]
        chunk["split_copies"] = columns.split_copies[start:stop]
        chunk["hash_splits"] = columns.hash_splits[start:stop]
        chunk["near_duplicate"] = columns.near_duplicate(start, stop)
        yield chunk
        start = stop


def read_manifest(path: Path, near_distance: int | None = 2, rows: int = ROWS) -> pd.DataFrame:
    """manifest.csv whole, typed, with the contract's columns (`image_chunks`)."""
    return pd.concat(list(image_chunks(path, scan(path, rows, near_distance), rows)), ignore_index=True)


def annotation_chunks(path: Path, rows: int = ROWS) -> Iterator[pd.DataFrame]:
    start = 0
    for chunk in read_chunks(path, rows):
        yield _typed(chunk, ("image_readable", "file_in_root", "file_readable"), ANNOTATION_NUMBERS, start)
        start += len(chunk)


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


def _hashes(values: list[str]) -> np.ndarray:
    """Distinct 64-bit hashes (a collision among 10^7 values: ~3e-6; contract_columns.py)."""
    return np.unique(hash_strings(pd.Series(values, dtype=object)))


def _key(example: dict[str, Any]) -> str:
    return example.get("path") or example.get("key") or f"observed {example.get('observed')}"


class Contract:
    """The rules as GX suites, one ValidationDefinition per table (so they show in Data Docs
    written to `docs_dir`), each run once per chunk (`check`); every rule's failures are
    tallied across the chunks: the first EXAMPLES failed rows, in file order, and the hashes
    of the distinct failed rows and files (Rule.rows / Rule.keys after `finish`)."""

    def __init__(self, rules: list[Rule], name: str, docs_dir: Path | None):
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.rules, self.docs_dir = rules, docs_dir
        self.context = context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)  # one line per run, not 69 bars
        if docs_dir is not None:
            context.add_data_docs_site(site_name=DOCS_SITE, site_config={
                "class_name": "SiteBuilder", "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())},
            })
        source = context.data_sources.add_pandas("manifests")
        self.definitions = {}
        for table in INDEX:
            suite = gx.ExpectationSuite(name=f"{name}_{table}")
            for rule in (r for r in rules if r.table == table):
                for expectation in rule.expectations:
                    expectation.meta = {"rule": rule.name}  # GX neither keeps the order nor sets ids here
                    suite.add_expectation(expectation)
            suite = context.suites.add(suite)  # after filling it: adding to a stored suite saves each time
            batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
            self.definitions[table] = context.validation_definitions.add(
                gx.ValidationDefinition(name=f"{name}_{table}", data=batch, suite=suite))
        self.by_name = {rule.name: rule for rule in rules}
        empty = np.zeros(0, dtype=np.uint64)
        self.seen = {rule.name: (empty, empty) for rule in rules}  # hashes of failed rows, of their files

    def check(self, table: str, frame: pd.DataFrame, part: str | None = None) -> None:
        """Run `table`'s suite on `frame` (one chunk; `part` names it in Data Docs)."""
        from great_expectations.core.run_identifier import RunIdentifier

        store = self.context.validation_results_store
        before = store.list_keys()
        index = [INDEX[table], "line"] if "line" in frame else [INDEX[table]]
        result = self.definitions[table].run(
            batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=part) if part else None,
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": index})
        failed: dict[str, list[dict[str, Any]]] = {}
        trimmed = False
        for outcome in result.results:
            if not outcome.success:
                failed.setdefault(outcome.expectation_config.meta["rule"], []).extend(_examples(outcome.result, frame, INDEX[table]))
                trimmed |= _trim(outcome.result)
        for name, examples in failed.items():
            self._tally(self.by_name[name], examples)
        if trimmed:  # the stored copy (Data Docs' source) without the full lists: bounded per chunk
            (key,) = [k for k in store.list_keys() if k not in before]
            store.set(key, result)
        del result, failed
        # a GX run leaves reference cycles holding its metrics (chunk-long Series); Python's full
        # collection waits for 25 % more long-lived objects, rare in a process that imported a lot
        gc.collect()

    def _tally(self, rule: Rule, examples: list[dict[str, Any]]) -> None:
        lines = [e.pop("line", 0) for e in examples]  # the row's place, not part of what failed
        rows, keys = self.seen[rule.name]
        self.seen[rule.name] = (np.union1d(rows, _hashes([str(e) for e in examples])),
                                np.union1d(keys, _hashes([_key(e) for e in examples])))
        kept = {_key(e): e for e in rule.failures}
        for _, example in sorted(zip(lines, examples, strict=True), key=lambda pair: pair[0]):
            if len(kept) >= EXAMPLES:
                break
            kept.setdefault(_key(example), example)  # the first row of each file
        rule.failures = list(kept.values())

    def finish(self) -> list[Rule]:
        """The rules with their counts; Data Docs built (offline) when asked for."""
        for rule in self.rules:
            rows, keys = self.seen[rule.name]
            rule.rows, rule.keys = len(rows), len(keys)
        if self.docs_dir is not None:
            self.context.build_data_docs(site_names=[DOCS_SITE])
            if left := localize_data_docs(self.docs_dir):  # GX newer than the lock: a CDN file not vendored yet
                print(f"warning: Data Docs still load {left} from the internet; vendor them "
                      "(components/runtime/web_assets/README.md)", file=sys.stderr)
        return self.rules


def _examples(result: dict[str, Any], frame: pd.DataFrame, index: str) -> list[dict[str, Any]]:
    rows = result.get("unexpected_index_list") or []
    if rows:
        return [dict(r) if isinstance(r, dict) else {index: frame.loc[r, index]} for r in rows]
    return [{"observed": result.get("observed_value")}]


def _trim(result: dict[str, Any]) -> bool:
    """Cut a failed expectation's lists of unexpected values and rows to EXAMPLES; whether
    there was more."""
    long = False
    for name in ("unexpected_list", "unexpected_index_list"):
        if len(result.get(name) or []) > EXAMPLES:
            result[name], long = result[name][:EXAMPLES], True
    if long:
        result.pop("unexpected_index_query", None)  # names every failed row
    return long


def _parts(chunks: Iterator[pd.DataFrame]) -> Iterator[tuple[pd.DataFrame, str | None]]:
    """Each chunk with its run name in Data Docs: its CSV lines, or None for a table in one
    chunk (one validation result, named by its time, as before)."""
    chunk, alone = next(chunks), True
    for following in chunks:
        yield chunk, _lines(chunk)
        chunk, alone = following, False
    yield chunk, None if alone else _lines(chunk)


def _lines(chunk: pd.DataFrame) -> str | None:
    return f"lines-{chunk['line'].iloc[0]}-{chunk['line'].iloc[-1]}" if len(chunk) else None


def report(rules: list[Rule], where: Path) -> str:
    """People-readable: every failed rule with its row count, example files and the fix."""
    failed = [r for r in rules if r.failures]
    lines = [f"Data contract FAILED for {where}: {len(failed)} of {len(rules)} rules broken."]
    for rule in failed:
        keys = list(dict.fromkeys(_key(e) for e in rule.failures))
        count = (rule.keys or len(keys)) if "observed" not in rule.failures[0] else "-"
        lines.append(f"  - {rule.name}: {count} rows; e.g. {keys[:3]}\n    fix: {rule.fix}")
    lines.append("Nothing downstream ran and nothing stored was changed. Fix the data (or the rule in "
                 "params.yaml tasks.<task>.contract, `skip` to remove one), then rerun `dvc repro`.")
    return "\n".join(lines)


def summarize(rules: list[Rule], columns: DatasetColumns, annotations: int, classes: list[str] | None) -> dict[str, Any]:
    failed = {r.name: r.rows or len({str(e) for e in r.failures}) for r in rules if r.failures}
    return {
        "success": not failed, "images": columns.images, "annotations": annotations,
        "rules": len(rules), "failed_rules": len(failed), "failures": failed,
        "classes_declared": classes is not None,
        **{f"split_{s}": int(columns.splits.get(s, 0)) for s in SPLITS},
    }


def validate_dataset(root: Path, manifest: Path, spec: TaskSpec, cfg: ContractConfig,
                     docs_dir: Path | None = None, rows: int = ROWS) -> tuple[list[Rule], dict[str, Any]]:
    """The whole contract over a dataset's manifests, `rows` rows at a time: (rules with
    failures, summary)."""
    classes = declared_classes(root, cfg)
    mask_values = None if classes is None else [*range(len(spec.class_names(classes))), cfg.ignore_index]
    contract = Contract(build_rules(cfg, classes, mask_values), spec.name, docs_dir)
    columns = scan(manifest, rows, cfg.near_duplicate_distance)
    for chunk, part in _parts(image_chunks(manifest, columns, rows)):
        contract.check("images", chunk, part)
    labels, annotations, has_mask_values = Counter(), 0, False
    for chunk, part in _parts(annotation_chunks(annotations_path(manifest), rows)):
        contract.check("annotations", chunk, part)
        labels.update(class_labels(chunk, spec, classes or []).groupby(["split", "label"]).size().to_dict())
        annotations += len(chunk)
        has_mask_values |= bool((chunk["kind"] == "mask_value").any())
    # masks hold class indices: without a class list there are no names to count or check
    needs_list = classes is None and has_mask_values
    counted = classes if classes is not None else [] if needs_list else sorted({label for _, label in labels} - {""})
    contract.check("stats", stats_table(columns.images, columns.splits, columns.groups, labels, counted, declared=not needs_list))
    rules = contract.finish()
    return rules, summarize(rules, columns, annotations, classes)


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
