"""Near-duplicates by perceptual hash: the clusters, and splits that keep each one whole.

The hash is the manifest's (imagehash.phash of the image as components/data/images.py
decodes it), so what the contract's leakage rule compares across splits (validate,
`contract.near_duplicate_distance` bits) is what the splits here keep together: the
built-in generators and the seeded split of exports without one (importers/common.py).
"""

from __future__ import annotations

import numpy as np


def phash(image) -> int:
    """The 64-bit perceptual hash of an RGB PIL image, as the manifest writes it (hex)."""
    import imagehash

    return int(str(imagehash.phash(image)), 16)


def clusters(hashes: list[int], distance: int) -> list[list[int]]:
    """Indices grouped so that any two hashes within `distance` bits (the same picture
    re-encoded or resized: 0; a near-duplicate: a few) share a cluster, transitively
    (union-find over the close pairs); each cluster in index order."""
    bits = np.array(hashes, dtype=np.uint64)
    parent = list(range(len(hashes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(hashes)):
        for j in np.flatnonzero(np.bitwise_count(bits[i] ^ bits[i + 1 :]) <= distance):
            parent[find(i + 1 + int(j))] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(hashes)):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


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
