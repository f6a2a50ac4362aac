"""Colour-coded RGB masks mapped to class indices by a palette: CVAT's `labelmap.txt`
(`name:r,g,b:parts:actions`, background first). A colour in
a mask that the palette does not name is refused with the mask and the colour (a silent
background would teach the model the wrong class)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from components.data import label_files
from components.data.importers.common import refuse

IGNORE = 255


def read_labelmap(path: Path) -> dict[str, tuple[int, int, int]]:
    text, problem = label_files.decode_text(path.read_bytes(), path.name)
    if problem:
        raise refuse(path, problem.rule, problem.message, problem.fix)
    palette = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            name, colour = line.split(":")[:2]
            rgb = tuple(int(v) for v in colour.split(","))
            assert len(rgb) == 3 and all(0 <= v <= 255 for v in rgb)
        except (ValueError, AssertionError):
            raise refuse(path, "labelmap rows", f"line {number} {line[:60]!r} is not 'name:r,g,b::'",
                         "write one class per line as name:r,g,b:: (background first)") from None
        palette[name.strip()] = rgb
    return palette


def class_mask(mask: Image.Image, palette: dict[str, tuple[int, int, int]], where: str) -> np.ndarray:
    """[H, W] uint8 indices: the palette's order (0 = its first entry, the background)."""
    rgb = np.asarray(mask.convert("RGB")).astype(np.int64)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    lookup = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(palette.values())}
    out = np.full(codes.shape, IGNORE, np.uint8)
    for code, index in lookup.items():
        out[codes == code] = index
    unknown = np.setdiff1d(np.unique(codes), list(lookup))
    if unknown.size:
        colours = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in unknown[:5].tolist()]
        raise refuse(where, "mask colours in the palette", f"colours {colours} are in no class of the palette",
                     "add them to labelmap.txt, or repaint them")
    return out
