"""The one drawing path of every figure of predictions: the evaluation's predictions.png (worst
test images) and `cvops predict`'s overlays both go through a TaskSpec's `draw`, which builds
its panels (image | ground truth | prediction [| errors]) from the helpers here.

Hand-written on PIL rather than torchvision's draw_bounding_boxes (already a dependency):
torchvision draws captions in the box colour without a background and has no dashed outline,
which is how ground truth is told apart from predictions here. Colours are fixed per class id
(index in the task's class list), so a class has one colour in every figure and every image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

MIN_SIDE = 192  # small images are enlarged (nearest) to about this so captions stay readable
FONT_SIZE = 13
# Kelly's / Trubetskoy's distinct colours; index = class id, 0 (background) is never drawn
PALETTE = ["#000000", "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
           "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000", "#aaffc3"]
# error map of a segmentation: predicted where the truth has no such class / missed / confused
ERROR_COLOURS = {"false positive": "#ff00ff", "false negative": "#00e5ff", "wrong class": "#ffd500"}
CORRECT, WRONG = "#1b7f3b", "#c0162c"  # caption backgrounds of right and wrong predictions


def class_colour(class_id: int) -> str:
    return PALETTE[class_id % len(PALETTE)] if class_id else "#808080"


def _rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def _text_colour(background: str) -> str:
    r, g, b = _rgb(background)
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "#ffffff"


def font(size: int = FONT_SIZE) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """A datamodule image (float [3, H, W] in [-1, 1]) as uint8 [3, H, W]."""
    return ((image.detach().cpu().float() * 0.5 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)


def to_pil(image: torch.Tensor | Image.Image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    return Image.fromarray(image.permute(1, 2, 0).cpu().numpy())


def upscale_factor(size: tuple[int, int]) -> int:
    return max(1, MIN_SIDE // max(1, min(size)))


def enlarged(image: Image.Image) -> tuple[Image.Image, int]:
    """The image enlarged (nearest, pixels stay visible) by an integer factor to ~MIN_SIDE."""
    factor = upscale_factor(image.size)
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST), factor


def caption(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, background: str,
            size: int = FONT_SIZE, inside: tuple[int, int] | None = None, taken: list | None = None) -> None:
    """Text on a filled box of `background` at xy (its top-left), kept inside `inside` (W, H)
    and moved down past the captions already placed (`taken`, their boxes; appended to)."""
    f = font(size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=f)
    w, h = right - left + 6, bottom - top + 4
    x, y = xy
    if inside is not None:
        x, y = min(max(0, x), max(0, inside[0] - w)), min(max(0, y), max(0, inside[1] - h))
    if taken is not None:
        for _ in range(len(taken)):
            hit = next((t for t in taken if x < t[2] and t[0] < x + w and y < t[3] and t[1] < y + h), None)
            if hit is None:
                break
            y = hit[3] + 1
        taken.append((x, y, x + w, y + h))
    draw.rectangle([x, y, x + w, y + h], fill=background)
    draw.text((x + 3 - left, y + 2 - top), text, fill=_text_colour(background), font=f)


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box: Sequence[float], colour: str, width: int, dash: int = 6) -> None:
    x1, y1, x2, y2 = box
    for (ax, ay), (bx, by) in [((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))]:
        length = max(abs(bx - ax), abs(by - ay))
        for start in np.arange(0, length, 2 * dash):
            t0, t1 = start / max(length, 1e-9), min(start + dash, length) / max(length, 1e-9)
            draw.line([ax + (bx - ax) * t0, ay + (by - ay) * t0, ax + (bx - ax) * t1, ay + (by - ay) * t1], fill=colour, width=width)


def boxes_panel(image: Image.Image, boxes: Sequence[Sequence[float]], class_ids: Sequence[int], classes: Sequence[str],
                scores: Sequence[float] | None = None, reference: Sequence[Sequence[float]] = ()) -> Image.Image:
    """The image enlarged with boxes (XYXY, image pixels) in their class colour. Ground truth
    (scores None): dashed outline, caption under the box's top edge. Predictions: solid
    outline, 'class score' caption above the box; `reference` boxes (the ground truth) drawn
    as thin white dashes beneath them, so a miss shows as a dashed box with no solid one."""
    canvas, k = enlarged(image)
    draw, taken = ImageDraw.Draw(canvas), []
    for box in reference:
        _dashed_rectangle(draw, [v * k for v in box], "#ffffff", 1, dash=4)
    for i, (box, c) in enumerate(zip(boxes, class_ids, strict=True)):
        box, colour = [v * k for v in box], class_colour(c)
        if scores is None:
            _dashed_rectangle(draw, box, colour, 3)
            caption(draw, (box[0], box[1] + 2), classes[c], colour, size=11, inside=canvas.size, taken=taken)
        else:
            draw.rectangle(box, outline=colour, width=3)
            caption(draw, (box[0], box[1] - 17), f"{classes[c]} {scores[i]:.2f}", colour, size=11, inside=canvas.size, taken=taken)
    return canvas


def mask_panel(image: Image.Image, mask: np.ndarray, alpha: float = 0.7, ignore: int = 255) -> Image.Image:
    """The image enlarged with each non-background class of `mask` (class ids [H, W], image
    size) blended in its class colour and outlined, so shape and tint are told apart."""
    canvas, k = enlarged(image)
    big = np.kron(mask, np.ones((k, k), dtype=mask.dtype)) if k > 1 else mask
    pixels = np.asarray(canvas).astype(np.float32)
    colours = colour_mask(big, ignore).astype(np.float32)
    drawn = (big != 0) & (big != ignore)
    pixels[drawn] = (1 - alpha) * pixels[drawn] + alpha * colours[drawn]
    edge = np.zeros_like(drawn)  # class boundaries, 2 px: a pixel whose neighbours differ
    for step in (1, 2):
        edge[:, :-step] |= big[:, :-step] != big[:, step:]
        edge[:, step:] |= big[:, step:] != big[:, :-step]
        edge[:-step, :] |= big[:-step, :] != big[step:, :]
        edge[step:, :] |= big[step:, :] != big[:-step, :]
    pixels[edge & drawn] = colours[edge & drawn]
    return Image.fromarray(pixels.round().astype(np.uint8))


def colour_mask(mask: np.ndarray, ignore: int = 255) -> np.ndarray:
    """uint8 [H, W, 3]: each class id in its palette colour (background black, ignore white)."""
    table = np.array([_rgb(class_colour(c)) if c else (0, 0, 0) for c in range(256)], dtype=np.uint8)
    table[ignore] = (255, 255, 255)
    return table[mask.astype(np.int64).clip(0, 255)]


def error_panel(image: Image.Image, truth: np.ndarray, predicted: np.ndarray, ignore: int = 255) -> Image.Image:
    """Where a segmentation is wrong, over the image in grey: false positive (a class predicted
    on background), false negative (a class predicted as background), wrong class."""
    grey = image.convert("L").convert("RGB")
    canvas, k = enlarged(grey)
    up = (lambda m: np.kron(m, np.ones((k, k), dtype=m.dtype))) if k > 1 else (lambda m: m)
    t, p = up(truth), up(predicted)
    pixels = (np.asarray(canvas).astype(np.float32) * 0.6).astype(np.uint8)  # dimmed: errors stand out
    valid = t != ignore
    kinds = {"false positive": valid & (t == 0) & (p != 0), "false negative": valid & (t != 0) & (p == 0),
             "wrong class": valid & (t != 0) & (p != 0) & (t != p)}
    for name, where in kinds.items():
        pixels[where] = _rgb(ERROR_COLOURS[name])
    return Image.fromarray(pixels)


def titled(panel: Image.Image, title: str, background: str = "#202020") -> Image.Image:
    """The panel under a title strip (captions on a background, never on the picture)."""
    strip = 20
    out = Image.new("RGB", (panel.width, panel.height + strip), background)
    out.paste(panel, (0, strip))
    draw = ImageDraw.Draw(out)
    f = font(12)
    text = title
    while draw.textlength(text, font=f) > panel.width - 6 and len(text) > 4:
        text = text[:-2]  # too long for the panel: cut, with an ellipsis
    if text != title:
        text = text[:-1] + "…"
    draw.text((3, 3), text, fill=_text_colour(background), font=f)
    return out


def row(panels: Sequence[Image.Image], gap: int = 4) -> torch.Tensor:
    """Panels side by side (tops aligned, white gaps) as uint8 [3, H, W]."""
    height = max(p.height for p in panels)
    out = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), height), "#ffffff")
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + gap
    return torch.from_numpy(np.asarray(out).copy()).permute(2, 0, 1)


def legend(entries: Sequence[tuple[str, str]], width: int, title: str = "") -> Image.Image:
    """A strip of colour swatches with names, wrapped to `width` px."""
    f, pad, swatch = font(12), 6, 14
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    items = ([(title, None)] if title else []) + list(entries)
    lines, line, x = [], [], pad
    for name, colour in items:
        w = (swatch + 4 if colour else 0) + int(probe.textlength(name, font=f)) + 14
        if line and x + w > width:
            lines.append(line)
            line, x = [], pad
        line.append((name, colour, x))
        x += w
    lines.append(line)
    out = Image.new("RGB", (width, pad + 20 * len(lines)), "#ffffff")
    draw = ImageDraw.Draw(out)
    for n, entries_ in enumerate(lines):
        y = pad // 2 + 20 * n + 2
        for name, colour, x0 in entries_:
            if colour:
                draw.rectangle([x0, y, x0 + swatch, y + swatch], fill=colour, outline="#000000")
                x0 += swatch + 4
            draw.text((x0, y), name, fill="#000000", font=f)
    return out


def class_legend(classes: Sequence[str], skip_background: bool = True) -> list[tuple[str, str]]:
    return [(name, class_colour(i)) for i, name in enumerate(classes) if not (skip_background and i == 0 and name == "background")]


FIGURE_WIDTH = 800  # narrow rows (one panel) are laid out in columns up to about this width


def stack(rows: Sequence[torch.Tensor], footer: Image.Image | None = None, gap: int = 6) -> Image.Image:
    """Rows (uint8 [3, H, W], one image each) in reading order, in as many columns as fit
    FIGURE_WIDTH, with an optional footer under them."""
    pictures = [to_pil(r) for r in rows]
    cell_w, cell_h = max(p.width for p in pictures), max(p.height for p in pictures)
    cols = max(1, min(len(pictures), (FIGURE_WIDTH + gap) // (cell_w + gap)))
    lines = -(-len(pictures) // cols)
    width = cols * cell_w + gap * (cols - 1)
    footer_h = footer.height + gap if footer is not None else 0
    out = Image.new("RGB", (width, lines * cell_h + gap * (lines - 1) + footer_h), "#ffffff")
    for i, p in enumerate(pictures):
        out.paste(p, ((i % cols) * (cell_w + gap), (i // cols) * (cell_h + gap)))
    if footer is not None:
        out.paste(footer, (0, out.height - footer.height))
    return out


def save_figure(rows: Sequence[torch.Tensor], out: Path, legend_entries: Sequence[tuple[str, str]] = (),
                title: str = "") -> Path:
    """Rows of panels (one image each) laid out into one PNG, with a legend at the bottom."""
    picture = stack(rows)
    if legend_entries or title:
        picture = stack([row([picture])], legend(legend_entries, picture.width, title))
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out)
    return out
