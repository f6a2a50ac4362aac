"""`cvops predict`'s selection of detections and its inputs, without a model: class-aware
NMS against torchvision's per-class nms as the reference, folders / globs / missing paths."""

from __future__ import annotations

import torch
from torchvision.ops import nms

from components.serving.predict import expand, readable
from components.serving.selection import select


def test_select_is_class_aware_nms_with_score_and_count_limits():
    torch.manual_seed(0)
    boxes = torch.rand(40, 2) * 50
    boxes = torch.cat([boxes, boxes + 10 + torch.rand(40, 2) * 20], dim=1)
    scores, labels = torch.rand(40), torch.randint(0, 3, (40,))
    names = ["circle", "square", "triangle"]
    record = {"detections": [{"label": names[int(c)], "score": float(s), "box": b.tolist()}
                             for b, s, c in zip(boxes, scores, labels, strict=True)]}
    kept = select(record, conf=0.3, iou=0.5, max_det=100)["detections"]
    reference = set()
    for c in range(3):  # the reference: plain nms within each class
        idx = torch.nonzero((labels == c) & (scores >= 0.3)).flatten()
        reference |= {int(idx[i]) for i in nms(boxes[idx], scores[idx], 0.5)}
    assert {(d["label"], round(d["score"], 6)) for d in kept} == {(names[int(labels[i])], round(float(scores[i]), 6)) for i in reference}
    assert [d["score"] for d in kept] == sorted((d["score"] for d in kept), reverse=True)
    assert len(select(record, conf=0.0, iou=0.5, max_det=3)["detections"]) == 3
    same_box = {"detections": [{"label": n, "score": 0.9 - i / 10, "box": [0, 0, 10, 10]} for i, n in enumerate(names)]}
    assert len(select(same_box, iou=0.5)["detections"]) == 3, "other classes are not suppressed"
    assert select({"label": "circle", "score": 0.2}, conf=0.5) == {"label": "circle", "score": 0.2}


def test_expand_takes_files_folders_and_globs_and_names_what_it_skips(tmp_path):
    from PIL import Image

    (tmp_path / "a").mkdir()
    for name in ("x.png", "y.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / "a" / name)
    (tmp_path / "a" / "readme.txt").write_text("not an image")
    (tmp_path / "a" / "broken.png").write_text("not an image")
    found = expand([str(tmp_path / "a"), str(tmp_path / "a" / "x.png"), str(tmp_path / "*" / "*.jpg"),
                    str(tmp_path / "missing.png"), str(tmp_path / "none" / "*.png")])
    assert found.images == [tmp_path / "a" / n for n in ("broken.png", "x.png", "y.jpg")]  # once each, folder sorted
    assert set(found.failed) == {str(tmp_path / "missing.png"), str(tmp_path / "none" / "*.png")}
    ok = readable(found.images, found.failed)
    assert [p.name for p, _ in ok] == ["x.png", "y.jpg"]
    assert "not a readable image" in found.failed[str(tmp_path / "a" / "broken.png")]
