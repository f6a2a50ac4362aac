"""The one image loader (components/data/images.py): every mode to 8-bit RGB with its range
scaled, EXIF orientation applied, the size checked from the header before decoding, and the
same pixels in training (the datamodule), the manifest and serving (to_pil)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from components.data.images import SUPPORTED, ImageError, load_rgb
from components.data.manifest import inspect_image
from components.serving.checkpoint import to_pil


def png(image: Image.Image, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **kw)
    return buffer.getvalue()


def test_16_bit_grayscale_is_scaled_not_clipped():
    ramp = (np.arange(64, dtype=np.uint16) * 1040).reshape(8, 8)  # 0..65520
    rgb = np.asarray(load_rgb(png(Image.fromarray(ramp))))
    expected = np.round(ramp / 257).astype(np.uint8)  # independent of Pillow's conversions
    assert rgb.shape == (8, 8, 3) and (rgb[..., 0] == expected).all() and (rgb[..., 2] == expected).all()
    assert 0 < rgb.mean() < 255  # Image.convert("RGB") made this all white


def test_32_bit_integer_and_float_images_are_scaled_or_refused_by_name():
    big = np.array([[0, 2**30, 2**31 - 1]], dtype=np.int32)
    assert np.asarray(load_rgb(Image.fromarray(big, "I")))[0, :, 0].tolist() == [0, 128, 255]
    small = np.array([[0, 65535]], dtype=np.int32)  # how Pillow opens some 16-bit files
    assert np.asarray(load_rgb(Image.fromarray(small, "I")))[0, :, 0].tolist() == [0, 255]
    unit = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    assert np.asarray(load_rgb(Image.fromarray(unit, "F")))[0, :, 0].tolist() == [0, 128, 255]
    with pytest.raises(ImageError, match="mode F with values outside 0..1"):
        load_rgb(Image.fromarray(np.array([[0.0, 7.0]], dtype=np.float32), "F"))
    with pytest.raises(ImageError, match="mode I with values outside"):
        load_rgb(Image.fromarray(np.array([[-5, 3]], dtype=np.int32), "I"))


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "PA", "CMYK", "YCbCr", "HSV", "LAB", "I;16", "I", "F", "RGBX"])
def test_every_supported_mode_becomes_rgb(mode):
    assert mode in SUPPORTED
    out = load_rgb(Image.new(mode, (5, 3)))
    assert out.mode == "RGB" and out.size == (5, 3)


def test_an_unsupported_mode_is_refused_by_name():
    with pytest.raises(ImageError, match="unsupported image mode 'La'"):
        load_rgb(Image.new("La", (4, 4)))


def test_cmyk_and_palette_colours_are_right():
    red = np.asarray(load_rgb(Image.new("CMYK", (2, 2), (0, 255, 255, 0))))
    assert red[0, 0].tolist() == [255, 0, 0]
    palette = Image.new("P", (2, 2))
    palette.putpalette([0, 0, 0, 10, 200, 30])
    palette.putpixel((0, 0), 1)
    assert np.asarray(load_rgb(palette))[0, 0].tolist() == [10, 200, 30]


def exif_rotated() -> tuple[bytes, np.ndarray]:
    """A 6x4 JPEG stored sideways with EXIF orientation 6 (rotate 90 clockwise to display)."""
    stored = np.zeros((4, 6, 3), np.uint8)
    stored[:, :3] = 255  # left half white as stored
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, "JPEG", quality=100, exif=exif)
    return buffer.getvalue(), stored


def test_exif_orientation_is_applied_the_same_in_manifest_training_and_serving(tmp_path):
    data, stored = exif_rotated()
    (tmp_path / "img.jpg").write_bytes(data)
    shown = np.asarray(load_rgb(tmp_path / "img.jpg"))
    assert shown.shape == (6, 4, 3)  # displayed: 4 wide, 6 high
    assert shown[:2].mean() > 200 and shown[-2:].mean() < 50  # stored left half is now on top
    row = inspect_image(tmp_path, "img.jpg")
    assert (row["width"], row["height"]) == (4, 6) and row["readable"]
    assert (np.asarray(to_pil(data)) == shown).all() and (np.asarray(to_pil(str(tmp_path / "img.jpg"))) == shown).all()

    from components.data.datamodule import ImageDataset, build_transform
    from components.tasks import get_task

    spec = get_task("classification")
    dataset = ImageDataset(tmp_path, [{"path": "img.jpg", "label": "a", "split": "train", "group": ""}], spec, ["a"],
                           lambda image, target: (image, target))
    image, _ = dataset[0]
    assert tuple(image.shape) == (3, 6, 4) and (image.permute(1, 2, 0).numpy() == shown).all()
    assert build_transform(spec, 8, targets=False) is not None


def test_size_is_checked_from_the_header_before_decoding(tmp_path):
    """A 12000x12000 PNG is refused from its header: decoding it would allocate ~430 MB (L)."""
    header_only = Image.new("L", (12000, 12000))
    (tmp_path / "big.png").write_bytes(png(header_only, compress_level=1))
    import tracemalloc

    tracemalloc.start()
    row = inspect_image(tmp_path, "big.png", max_side=4096)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert not row["readable"] and "exceeds contract.max_size 4096" in row["error"]
    assert (row["width"], row["height"]) == (12000, 12000)
    assert peak < 50e6, peak


# ---- letterbox: a fixed input size without stretching, predictions back in the image's pixels

BOX = [60.0, 30.0, 180.0, 90.0]  # XYXY in the 300x120 picture


def picture(width: int = 300, height: int = 120, box=BOX) -> tuple[Image.Image, np.ndarray]:
    """A black image with one white rectangle, and its class mask (1 inside, 0 outside)."""
    mask = np.zeros((height, width), np.uint8)
    x1, y1, x2, y2 = (int(v) for v in box)
    mask[y1:y2, x1:x2] = 1
    return Image.fromarray(np.repeat(mask[..., None] * 255, 3, axis=2)), mask


class FindsTheRectangle:
    """What a perfect detector / segmenter answers: the bright pixels of the input it gets."""

    def __init__(self, task: str):
        self.task = task

    def __call__(self, images):
        import torch

        if self.task == "segmentation":
            bright = (images[:, 0] > 0.1).float()  # in [-1, 1]: the grey padding is 0.004, a 2x corner 0.125
            return torch.stack([1 - bright, bright], dim=1)
        out = []
        for image in images:
            ys, xs = torch.nonzero(image[0] > 0.25, as_tuple=True)
            box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()[None]
            out.append({"boxes": box, "scores": torch.ones(1), "labels": torch.ones(1, dtype=torch.int64)})
        return out


@pytest.mark.parametrize(("side", "size"), [(64, (300, 120)), (600, (300, 120)), (64, (120, 300))])
def test_letterbox_keeps_the_aspect_and_boxes_map_back_exactly(side, size):
    import torch
    from torchvision import tv_tensors

    from components.data.datamodule import build_transform
    from components.data.letterbox import boxes_to_original, fitted
    from components.tasks import get_task

    box = BOX if size[0] > size[1] else [30.0, 60.0, 90.0, 180.0]
    image, _ = picture(*size, box=box)
    target = {"boxes": tv_tensors.BoundingBoxes(torch.tensor([box]), format="XYXY", canvas_size=size[::-1]),
              "labels": torch.tensor([1])}
    pixels = tv_tensors.Image(torch.from_numpy(np.array(image)).permute(2, 0, 1))
    out, moved = build_transform(get_task("detection"), side)(pixels, target)
    assert tuple(out.shape) == (3, side, side)
    fit_w, fit_h = fitted(*size, (side, side))
    assert max(fit_w, fit_h) == side and abs(fit_w / fit_h - size[0] / size[1]) < 0.05  # not stretched
    assert (out[:, fit_h:, :].abs() < 0.01).all() and (out[:, :, fit_w:].abs() < 0.01).all()  # grey padding
    x1, y1, x2, y2 = moved["boxes"][0].tolist()
    ys, xs = torch.nonzero(out[0] > 0.25, as_tuple=True)  # the rectangle's pixels sit under the moved box
    assert abs(xs.min() - x1) <= 1 and abs(ys.min() - y1) <= 1 and abs(xs.max() + 1 - x2) <= 1 and abs(ys.max() + 1 - y2) <= 1
    back = boxes_to_original(moved["boxes"].as_subclass(torch.Tensor), (side, side), size)
    assert torch.allclose(back, torch.tensor([box], dtype=torch.float64), atol=1e-4)


def test_a_mask_round_trip_through_the_letterbox_gives_back_the_original_mask():
    import torch
    from torchvision import tv_tensors

    from components.data.datamodule import build_transform
    from components.data.letterbox import MASK_FILL, mask_to_original
    from components.tasks import get_task
    from components.tasks.segmentation import IGNORE_INDEX

    assert MASK_FILL == IGNORE_INDEX
    image, mask = picture()
    mask[100:120, 200:300] = 2  # a second class along the bottom edge, against the padding
    for side in (150, 600):  # halving and doubling: nearest neighbour both ways
        pixels = tv_tensors.Image(torch.from_numpy(np.array(image)).permute(2, 0, 1))
        _, moved = build_transform(get_task("segmentation"), side)(pixels, tv_tensors.Mask(torch.from_numpy(mask).long()))
        assert tuple(moved.shape) == (side, side) and (moved[side * 120 // 300 :] == MASK_FILL).all()
        assert (mask_to_original(moved.as_subclass(torch.Tensor), (300, 120)).numpy() == mask).all()


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_served_predictions_on_a_non_square_image_land_on_the_original_pixels(task):
    """predict_images (the pyfunc, `cvops predict`, evaluate's drawings) on a 300x120 image:
    a model that finds the rectangle exactly answers it in the image's own pixels."""
    from components.serving.checkpoint import predict_images

    image, mask = picture()
    [record] = predict_images(FindsTheRectangle(task), {"task": task, "image_size": 600, "classes": ["background", "box"]}, [image])
    if task == "detection":
        assert np.allclose(record["detections"][0]["box"], BOX, atol=0.5)
    else:
        assert (np.asarray(record["mask"]) == mask).all() and record["pixels"]["box"] == mask.sum()
    [coarse] = predict_images(FindsTheRectangle(task), {"task": task, "image_size": 64, "classes": ["background", "box"]}, [image])
    if task == "detection":  # one input pixel is 300/64 = 4.7 image pixels
        assert np.allclose(coarse["detections"][0]["box"], BOX, atol=300 / 64)
    else:
        assert np.asarray(coarse["mask"]).shape == (120, 300) and (np.asarray(coarse["mask"]) == mask).mean() > 0.97


def test_training_and_evaluation_read_non_square_images_through_the_same_letterbox(tmp_path):
    import json

    from components.data.datamodule import CVDataModule
    from components.data.letterbox import boxes_to_original

    image, _ = picture()
    (tmp_path / "images").mkdir()
    image.save(tmp_path / "images" / "a.png")
    (tmp_path / "annotations").mkdir()
    coco = {"images": [{"id": 1, "file_name": "images/a.png", "width": 300, "height": 120}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [60, 30, 120, 60], "area": 7200, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "box"}]}
    for split in ("train", "test"):
        (tmp_path / "annotations" / f"{split}.json").write_text(json.dumps(coco))
    data = CVDataModule(tmp_path, __import__("components.tasks", fromlist=["get_task"]).get_task("detection"), 64, 1)
    for split in ("train", "test"):
        pixels, target = data.dataset(split, train=split == "train")[0]
        assert tuple(pixels.shape) == (3, 64, 64) and tuple(target["boxes"].canvas_size) == (64, 64)
        assert np.allclose(boxes_to_original(target["boxes"].as_subclass(__import__("torch").Tensor), (64, 64), (300, 120)), [BOX], atol=1e-4)
