"""The data contract's dataset-wide columns, from one pass over manifest.csv in chunks.

The table-wide rules (a path listed twice, the same bytes twice in a split or in two splits,
a near-duplicate across splits) compare rows that can lie in different chunks of the
manifest. So a first pass keeps a few compact numbers per row (hashes of the path and the
sha256, the split's code, the perceptual hash: ~30 bytes, not the ~1.4 KB of a pandas row
under GX), turns them into per-row columns (`path_copies`, `split_copies`, `hash_splits`,
`twin`) and counts what the stats table needs; the validate stage then checks each chunk
with these columns added, as row-level rules.

Hashes: pandas' 64-bit hash of the strings. Two different paths (or sha256s) sharing a hash
would make a false duplicate; among n rows that happens with probability about n^2 / 2^65:
3e-6 at 10^7 rows, so the strings are not kept to verify.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from components.data.near_duplicates import twins_across


def read_chunks(path: Path, rows: int, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """A CSV as strings ("" for empty cells), `rows` rows at a time; at least one (maybe
    empty) chunk, so an empty table is still checked once."""
    yield from pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=max(int(rows), 1), usecols=columns)


def hash_strings(values: pd.Series) -> np.ndarray:
    """64-bit hashes of strings (collisions: the module docstring)."""
    return pd.util.hash_pandas_object(values, index=False).to_numpy(dtype=np.uint64)


def phash_bits(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(which of `hashes` are 16 lowercase hex digits, those as uint64), vectorised: pandas'
    `str.fullmatch` and Python ints for 10^6 hashes left ~270 MB of heap behind."""
    ok = np.fromiter(map(len, hashes), dtype=np.int64, count=len(hashes)) == 16
    digits = np.asarray(hashes[ok], dtype="U16").view(np.uint32).reshape(-1, 16)
    number, lower = (digits >= ord("0")) & (digits <= ord("9")), (digits >= ord("a")) & (digits <= ord("f"))
    ok[ok] = (number | lower).all(axis=1)
    digits = digits[(number | lower).all(axis=1)]
    nibbles = np.where(digits >= ord("a"), digits - (ord("a") - 10), digits - ord("0")).astype(np.uint64)
    return ok, np.bitwise_or.reduce(nibbles << np.arange(60, -1, -4, dtype=np.uint64), axis=1)


def group_sizes(*keys: np.ndarray) -> np.ndarray:
    """Per row, how many rows share all of `keys` with it."""
    n = len(keys[0])
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    order = np.lexsort(keys)
    new = np.zeros(n, dtype=bool)
    new[0] = True
    for key in keys:
        ordered = key[order]
        new[1:] |= ordered[1:] != ordered[:-1]
    run = np.cumsum(new) - 1
    sizes = np.empty(n, dtype=np.int32)
    sizes[order] = np.bincount(run).astype(np.int32)[run]
    return sizes


def distinct_per_group(group: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Per row, how many distinct `value`s the rows of its `group` hold."""
    n = len(group)
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    order = np.lexsort((value, group))  # by group, then value
    g, v = group[order], value[order]
    new_group = np.r_[True, g[1:] != g[:-1]]
    new_pair = new_group | np.r_[True, v[1:] != v[:-1]]
    run = np.cumsum(new_group) - 1
    distinct = np.empty(n, dtype=np.int32)
    distinct[order] = np.bincount(run, weights=new_pair).astype(np.int32)[run]
    return distinct


@dataclass
class DatasetColumns:
    """Per manifest row (in file order): the leakage and uniqueness columns, and the counts
    of the stats table (components/data/contract_rules.py stats_table)."""

    path_copies: np.ndarray  # rows listing the same path (1: unique)
    split_copies: np.ndarray  # readable rows with the same split and sha256 (1 when unreadable)
    hash_splits: np.ndarray  # splits holding an image with the same sha256 (1 when unhashed)
    twin: np.ndarray  # row of the lowest-listed near-duplicate in another split, -1 when none
    twin_paths: dict[int, str] = field(default_factory=dict)  # path of each row some row names as twin
    splits: Counter = field(default_factory=Counter)  # images per split
    groups: Counter = field(default_factory=Counter)  # images per (split, group)

    @property
    def images(self) -> int:
        return len(self.path_copies)

    def near_duplicate(self, start: int, stop: int) -> np.ndarray:
        """The twins' paths for rows start..stop ("" when none)."""
        twin = self.twin[start:stop]
        return np.array([self.twin_paths[t] if t >= 0 else "" for t in twin.tolist()], dtype=object)


def scan(manifest: Path, rows: int, near_distance: int | None) -> DatasetColumns:
    """Pass 1 over manifest.csv (`rows` rows at a time; `near_distance` None: no twins),
    then a pass over the path column for the twins' paths only."""
    paths, shas, hashed, splits, readable, bits, valid = [], [], [], [], [], [], []
    codes: dict[str, int] = {}
    counts, groups = Counter(), Counter()
    for chunk in read_chunks(manifest, rows, ["path", "split", "group", "readable", "sha256", "phash"]):
        paths.append(hash_strings(chunk["path"]))
        shas.append(hash_strings(chunk["sha256"]))
        hashed.append(chunk["sha256"].ne("").to_numpy())
        for split in chunk["split"].unique():
            codes.setdefault(split, len(codes))
        splits.append(chunk["split"].map(codes).to_numpy(dtype=np.int32))
        readable.append(chunk["readable"].eq("True").to_numpy())
        ok, numbers = phash_bits(chunk["phash"].to_numpy())
        valid.append(ok)
        bits.append(numbers)
        counts.update(chunk["split"].value_counts().to_dict())
        groups.update(chunk.groupby(["split", "group"]).size().to_dict())
    # joined one at a time, each list freed at once: the peak is ~2 arrays, not 2 copies of all
    path_hash = np.concatenate(paths)
    del paths[:]
    n = len(path_hash)
    columns = DatasetColumns(path_copies=group_sizes(path_hash), split_copies=np.ones(n, dtype=np.int32),
                             hash_splits=np.ones(n, dtype=np.int32), twin=np.full(n, -1, dtype=np.int64),
                             splits=counts, groups=groups)
    del path_hash
    split, is_hashed = np.concatenate(splits), np.concatenate(hashed)
    del splits[:], hashed[:]
    sha = np.concatenate(shas)
    del shas[:]
    columns.hash_splits[is_hashed] = distinct_per_group(sha[is_hashed], split[is_hashed])
    del is_hashed
    readable_rows = np.concatenate(readable)  # as the rule always read: readable rows, by (split, sha256)
    del readable[:]
    columns.split_copies[readable_rows] = group_sizes(split[readable_rows], sha[readable_rows])
    del sha, readable_rows
    if near_distance is not None:
        rows_hashed = np.flatnonzero(np.concatenate(valid))
        if len(rows_hashed) >= 2:
            twin = twins_across(np.concatenate(bits), split[rows_hashed], near_distance)
            has = twin >= 0
            columns.twin[rows_hashed[has]] = rows_hashed[twin[has]]
            columns.twin_paths = _paths_of(manifest, rows, np.unique(rows_hashed[twin[has]]))
    return columns


def _paths_of(manifest: Path, rows: int, wanted: np.ndarray) -> dict[int, str]:
    """The path of each row in `wanted` (sorted row numbers), reading only that column."""
    found: dict[int, str] = {}
    if not len(wanted):
        return found
    start = 0
    for chunk in read_chunks(manifest, rows, ["path"]):
        stop = start + len(chunk)
        here = wanted[(wanted >= start) & (wanted < stop)]
        found.update(zip(here.tolist(), chunk["path"].to_numpy()[here - start].tolist(), strict=True))
        start = stop
    return found
