"""Near-duplicates by perceptual hash: the close pairs, the clusters, and splits that keep
each cluster whole.

The hash is the manifest's (imagehash.phash of the image as components/data/images.py
decodes it), so what the contract's leakage rule compares across splits (validate,
`contract.near_duplicate_distance` bits) is what the splits here keep together: the
built-in generators and the seeded split of exports without one (importers/common.py).

Pairs are found through a pigeonhole index, not by comparing all pairs: at 10^6 images all
pairs are 5 x 10^11 tests (hours here); the index compares only hashes that share a block.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def phash(image) -> int:
    """The 64-bit perceptual hash of an RGB PIL image, as the manifest writes it (hex)."""
    import imagehash

    return int(str(imagehash.phash(image)), 16)


def _blocks(distance: int) -> list[tuple[int, int]]:
    """(shift, width) of distance+1 bit blocks covering the 64 bits."""
    count = min(distance + 1, 64)
    edges = [round(64 * k / count) for k in range(count + 1)]
    return [(lo, hi - lo) for lo, hi in zip(edges, edges[1:], strict=False)]


def close_pairs(bits: np.ndarray, distance: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every pair (i, j), i < j, of 64-bit hashes within `distance` bits, once, as batches of
    index arrays.

    Multi-index hashing (Norouzi et al., 2012): cut the hash into distance+1 blocks; two
    hashes within `distance` bits agree exactly on at least one block (pigeonhole). Per block,
    the hashes are sorted by that block's value and only neighbours in one run of equal values
    are tested, offset by offset, vectorised. The work is the pairs sharing a block: about N for
    spread hashes, a run's size squared for many near-identical pictures. A pair is reported
    at the first block it agrees on, so exactly once."""
    bits = np.asarray(bits, dtype=np.uint64)
    n, blocks = len(bits), _blocks(distance)
    for b, (shift, width) in enumerate(blocks):
        mask = np.uint64((1 << width) - 1)
        key = (bits >> np.uint64(shift)) & mask
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
        run_end = np.repeat(np.r_[starts[1:], n], np.diff(np.r_[starts, n]))  # end of each position's run
        active = np.flatnonzero(run_end - np.arange(n) > 1)
        offset = 1
        while len(active):
            i, j = order[active], order[active + offset]
            xor = bits[i] ^ bits[j]
            keep = np.bitwise_count(xor) <= distance
            for earlier, w in blocks[:b]:  # agreed on an earlier block: reported there
                keep &= ((xor >> np.uint64(earlier)) & np.uint64((1 << w) - 1)) != 0
            if keep.any():
                i, j = i[keep], j[keep]
                yield np.minimum(i, j), np.maximum(i, j)
            offset += 1
            active = active[run_end[active] > active + offset]


def clusters(hashes: list[int], distance: int) -> list[list[int]]:
    """Indices grouped so that any two hashes within `distance` bits (the same picture
    re-encoded or resized: 0; a near-duplicate: a few) share a cluster, transitively
    (union-find over the close pairs); each cluster in index order."""
    parent = list(range(len(hashes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for first, second in close_pairs(np.array(hashes, dtype=np.uint64), distance):
        for i, j in zip(first.tolist(), second.tolist(), strict=True):
            a, b = find(i), find(j)
            parent[max(a, b)] = min(a, b)  # the lowest index roots its cluster
    groups: dict[int, list[int]] = {}
    for i in range(len(hashes)):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def twins_across(bits: np.ndarray, splits: np.ndarray, distance: int) -> np.ndarray:
    """Per hash, the lowest index of a hash within `distance` bits in another split (-1 when
    none): the leakage rule's near-duplicate."""
    twin = np.full(len(bits), len(bits), dtype=np.int64)
    for i, j in close_pairs(bits, distance):
        across = splits[i] != splits[j]
        i, j = i[across], j[across]
        np.minimum.at(twin, i, j)
        np.minimum.at(twin, j, i)
    twin[twin == len(bits)] = -1
    return twin


def keep_together(splits: list[str], hashes: list[int], distance: int | None) -> tuple[list[str], int]:
    """`splits` with every cluster that spans several splits moved whole into the split of
    its first member (a seeded split stays seeded; the fractions move by the few images
    moved). Returns (splits, images moved); `distance` None changes nothing."""
    splits = list(splits)
    if distance is None:
        return splits, 0
    moved = 0
    for members in clusters(hashes, distance):
        home = splits[members[0]]
        for i in members[1:]:
            if splits[i] != home:
                splits[i], moved = home, moved + 1
    return splits, moved
