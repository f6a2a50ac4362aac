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
