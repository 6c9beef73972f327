"""amg.py folder and coco_rle JSON round trips, and reading what SAM's own code writes."""

import json

import numpy as np
import pytest

from sepl.amgio import (AMG_COLUMNS, encode_rle, find_masks, read_amg_folder, read_masks, read_rle_json,
                        write_amg_folder, write_rle_json)
from sepl.errors import SeplError


@pytest.fixture
def masks(rng):
    m = rng.random((12, 23, 31)) < 0.3
    m[3] = False  # an empty mask survives the round trip
    return m


def test_folder_roundtrip_orders_numerically(tmp_path, masks):
    meta = [dict(predicted_iou=0.9 + k / 100, stability_score=0.95, point_coords=[[k, 2 * k]]) for k in range(12)]
    write_amg_folder(tmp_path / "img", masks, meta)
    names = sorted(p.name for p in (tmp_path / "img").iterdir())
    assert "10.png" in names and "metadata.csv" in names
    header = (tmp_path / "img" / "metadata.csv").read_text().splitlines()[0]
    assert header.split(",") == AMG_COLUMNS
    back, rows = read_amg_folder(tmp_path / "img")
    assert back.dtype == bool and np.array_equal(back, masks)  # 10.png after 9.png, not after 1.png
    assert rows[10]["id"] == 10 and rows[10]["point_input_y"] == 20
    assert rows[5]["area"] == int(masks[5].sum())
    assert rows[5]["bbox_w"] > 0 and rows[3]["bbox_w"] == 0


def test_reads_segment_anything_written_png(tmp_path, masks):
    # amg.py writes cv2.imwrite(path, mask * 255) for a bool mask
    cv2 = pytest.importorskip("cv2")
    d = tmp_path / "x"
    d.mkdir()
    for k, m in enumerate(masks[:3]):
        cv2.imwrite(str(d / f"{k}.png"), m.astype(np.uint8) * 255)
    back, rows = read_amg_folder(d)
    assert np.array_equal(back, masks[:3]) and rows == [{"id": 0}, {"id": 1}, {"id": 2}]


def test_rle_roundtrip_matches_sam_encoder(tmp_path, masks):
    torch = pytest.importorskip("torch")
    from segment_anything.utils.amg import coco_encode_rle, mask_to_rle_pytorch

    sam_rles = [coco_encode_rle(r) for r in mask_to_rle_pytorch(torch.from_numpy(masks))]
    assert [r["counts"] for r in sam_rles] == [encode_rle(m)["counts"] for m in masks]
    records = [dict(segmentation=r, area=int(m.sum()), predicted_iou=0.9) for r, m in zip(sam_rles, masks)]
    (tmp_path / "img.json").write_text(json.dumps(records))
    back, meta = read_rle_json(tmp_path / "img.json")
    assert np.array_equal(back, masks) and meta[0]["predicted_iou"] == 0.9
    write_rle_json(tmp_path / "out.json", masks, [dict(predicted_iou=0.5)] * 12)
    again, meta2 = read_masks(tmp_path / "out.json")
    assert np.array_equal(again, masks) and meta2[1]["bbox"] and meta2[1]["predicted_iou"] == 0.5


def test_find_masks(tmp_path, masks):
    write_amg_folder(tmp_path / "a", masks[:2])
    write_rle_json(tmp_path / "b.json", masks[:2])
    assert find_masks(tmp_path, "a") == tmp_path / "a"
    assert find_masks(tmp_path, "b") == tmp_path / "b.json"
    assert find_masks(tmp_path, "c") is None


def test_bad_files(tmp_path, masks):
    with pytest.raises(SeplError, match="not found"):
        read_amg_folder(tmp_path / "nope")
    d = write_amg_folder(tmp_path / "bad", masks[:2])
    (d / "1.png").write_bytes(b"not a png")
    with pytest.raises(SeplError, match="cannot read mask 1.png|cannot read mask .*1.png"):
        read_amg_folder(d)
    from PIL import Image

    d2 = write_amg_folder(tmp_path / "grey", masks[:2])
    Image.fromarray(np.full((23, 31), 128, np.uint8)).save(d2 / "1.png")
    with pytest.raises(SeplError, match="not binary"):
        read_amg_folder(d2)
    (tmp_path / "c.json").write_text("{broken")
    with pytest.raises(SeplError, match="cannot read"):
        read_rle_json(tmp_path / "c.json")
    (tmp_path / "d.json").write_text(json.dumps([{"area": 3}]))
    with pytest.raises(SeplError, match="no RLE"):
        read_rle_json(tmp_path / "d.json")
