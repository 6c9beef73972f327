"""The bulk data path (sepl.fo._fill): worker-count invariance, chunk-boundary resume,
oversize samples, in-memory samples without reloads, raw documents equal FiftyOne's."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sepl.errors import SeplError
from sepl.synth import SYNTH_CLASSES

REPO = Path(__file__).resolve().parent.parent
N = 20


def _masks(rng, gt, n=12):
    out = [gt == c for c in np.unique(gt) if c not in (0, 255)]
    h, w = gt.shape
    yy, xx = np.mgrid[:h, :w]
    while len(out) < n:
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(5, 40)
        out.append((yy - cy) ** 2 + (xx - cx) ** 2 < r * r)
    out.append(np.zeros_like(gt, bool))  # an empty mask: zero box
    return np.stack(out)


def fill(ds, n=N, seed=0):
    """n generated samples with GT, a seed (GT shifted) and masks, as a notebook would add them."""
    import fiftyone as fo

    from sepl.fo.convert import masks_to_detections, set_mask_targets, to_segmentation
    from sepl.synth import make_scene

    rng = np.random.default_rng(seed)
    samples = []
    for k in range(n):
        _, gt = make_scene(rng, size=(60, 80))
        seed_map = np.roll(np.where(gt == 255, 0, gt), 3, axis=1).astype(np.uint8)
        samples.append(fo.Sample(filepath=f"/nonexistent/img_{k:03d}.jpg",
                                 metadata=fo.ImageMetadata(width=80, height=60),
                                 gt=to_segmentation(gt), seeds=to_segmentation(seed_map),
                                 sam=masks_to_detections(_masks(rng, gt))))
    ds.add_samples(samples)
    targets = dict(enumerate(SYNTH_CLASSES))
    set_mask_targets(ds, "gt", targets)
    set_mask_targets(ds, "seeds", targets)
    return samples


def _outputs(ds, field):
    out = {}
    for sid, seg, dets in zip(*ds.values(["id", field, f"{field}_masks"])):
        out[sid] = (seg.get_mask(), [(d.label, d.selected, d.class_id, d.o_s, d.o_p, d.source_id)
                                     for d in dets.detections])
    return out


def test_raw_documents_are_what_fiftyone_stores(rng):
    import fiftyone as fo

    from sepl.fo.convert import masks_to_detections
    from sepl.labels import raw

    gt = np.zeros((30, 40), np.uint8)
    gt[5:20, 10:30] = 1
    masks = _masks(rng, gt, 6)
    ours = fo.Detections._from_son(raw.detections_doc(masks, scores=np.linspace(0, 1, len(masks))))
    ref = masks_to_detections(masks, scores=np.linspace(0, 1, len(masks)))
    for a, b in zip(ours.detections, ref.detections):
        assert a.bounding_box == b.bounding_box and np.array_equal(a.mask, b.mask) and a.confidence == b.confidence
    assert np.array_equal(raw.detection_masks(ref.to_mongo(), "m", 30, 40), masks)
    seg = fo.Segmentation._from_son(raw.segmentation_doc(gt))
    assert np.array_equal(seg.get_mask(), gt)
    with pytest.raises(SeplError, match="holds no segmentation"):
        raw.label_map(None, "seeds")


def test_zlib_ng_decodes_what_fiftyone_stores(rng):
    """Masks are inflated and deflated with zlib-ng: the arrays equal FiftyOne's own
    (de)serialisation (the standard library's zlib), for label maps, bool crops and other
    dtypes and orders."""
    import zlib

    from fiftyone.core.utils import deserialize_numpy_array, serialize_numpy_array

    from sepl.labels import raw

    assert raw._inflate is not zlib.decompress  # the dependency is installed, so it is used
    arrays = [rng.integers(0, 21, (37, 50)).astype(np.uint8), rng.random((20, 9)) > 0.5,
              np.asfortranarray(rng.integers(0, 9, (6, 7)).astype(np.int32)), np.zeros((0, 5), bool),
              np.repeat(np.arange(250, dtype=np.uint8), 900).reshape(375, 600)]
    for a in arrays:
        data = serialize_numpy_array(a)
        ours, theirs = raw.decode_array(data), deserialize_numpy_array(data)
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
        assert raw._inflate(data) == zlib.decompress(data)
        mine = raw.encode_array(a)  # deflated by zlib-ng: FiftyOne's own reader gives the array back
        back = deserialize_numpy_array(mine)
        assert back.dtype == a.dtype and back.flags.f_contiguous == a.flags.f_contiguous and np.array_equal(back, a)


def test_refine_same_outputs_for_1_and_2_workers_and_any_chunk(dataset):
    from sepl.fo import refine
    from sepl.fo.convert import load_label_map, load_masks
    from sepl.merge import merge

    fill(dataset)
    assert refine(dataset, "seeds", "sam", "one", num_workers=1, chunk_size=64) == N
    assert refine(dataset, "seeds", "sam", "two", num_workers=2, chunk_size=3) == N
    a, b = _outputs(dataset, "one"), _outputs(dataset, "two")
    assert a.keys() == b.keys()
    for sid in a:
        assert np.array_equal(a[sid][0], b[sid][0]) and a[sid][1] == b[sid][1]
    s = dataset.first()
    ref = merge(load_label_map(s, "seeds"), load_masks(s, "sam", (60, 80)), num_classes=len(SYNTH_CLASSES))
    assert np.array_equal(s.two.get_mask(), ref.labels)


def test_import_seeds_and_evaluate_same_for_1_and_2_workers(dataset, tmp_path):
    from sepl.fo import evaluate, importers
    from sepl.fo.evaluate import evaluate_arrays
    from sepl.labelio import write_label

    fill(dataset)
    folder = tmp_path / "seeds"
    for sid, path, gt in zip(*dataset.values(["id", "filepath", "gt"])):
        write_label(folder / f"{Path(path).stem}.png", np.roll(gt.get_mask(), 2, axis=0))
    assert importers.import_seeds(dataset, folder, "s1", num_workers=1) == N
    assert importers.import_seeds(dataset, folder, "s2", num_workers=2) == N
    for m1, m2 in zip(*dataset.values(["s1", "s2"])):
        assert np.array_equal(m1.get_mask(), m2.get_mask())
    cm1, per1, _ = evaluate_arrays(dataset, "s1", "gt", len(SYNTH_CLASSES), num_workers=1)
    cm2, per2, _ = evaluate_arrays(dataset, "s1", "gt", len(SYNTH_CLASSES), num_workers=2)
    assert np.array_equal(cm1.matrix, cm2.matrix) and per1.keys() == per2.keys()
    for k in per1:  # (mIoU, {class: IoU}, confusion cells)
        assert per1[k][:2] == per2[k][:2] and np.array_equal(per1[k][2], per2[k][2])
    (res,) = evaluate(dataset, "s1", "gt")
    assert res.num_samples == N and len(dataset.exists("s1_miou")) == N


def test_kill_between_chunks_then_rerun_computes_only_the_rest(dataset):
    """A run killed (os._exit) after its 2nd chunk: the rerun writes exactly the others."""
    import fiftyone as fo

    from sepl.fo import refine

    fill(dataset)
    dataset.persistent = True  # the killed run is another process
    code = f"""
        import os, fiftyone as fo
        from sepl.fo import refine
        ds = fo.load_dataset({dataset.name!r})
        seen = []
        def progress(frac, label):
            seen.append(frac)
            if len(seen) == 2:
                os._exit(3)  # killed between chunk 2 and chunk 3
        refine(ds, "seeds", "sam", "out", chunk_size=4, num_workers=1, progress=progress)
    """
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 3, res.stderr[-2000:]
    dataset.reload()
    written = dataset.exists("out")
    assert len(written) == 8  # two whole chunks, nothing of the third
    before = dict(zip(*written.values(["id", "last_modified_at"])))
    assert refine(dataset, "seeds", "sam", "out", chunk_size=4, num_workers=1) == N - 8
    after = dict(zip(*dataset.values(["id", "last_modified_at"])))
    assert all(after[i] == t for i, t in before.items())  # nothing written was recomputed
    assert len(dataset.exists("out")) == N and len(dataset.exists("out_masks")) == N  # nothing missing
    fresh = fo.Dataset()
    try:
        fresh.add_samples(dataset.select_fields(["gt", "seeds", "sam"]))
        fresh.mask_targets = dataset.mask_targets
        fresh.save()
        refine(fresh, "seeds", "sam", "out", num_workers=1)
        for a, b in zip(dataset.values("out"), fresh.values("out")):
            assert np.array_equal(a.get_mask(), b.get_mask())
    finally:
        fresh.delete()


def test_held_samples_get_the_values_without_reloads(dataset, monkeypatch):
    import fiftyone.core.sample as fos

    from sepl.fo import evaluate, refine

    held = fill(dataset, n=10)
    calls = []
    real = fos.Sample.reload
    monkeypatch.setattr(fos.Sample, "reload", lambda self, *a, **k: calls.append(self.id) or real(self, *a, **k))
    refine(dataset, "seeds", "sam", "out", num_workers=1)
    evaluate(dataset, "out", "gt")
    assert calls == []
    for s in held:
        db = dataset[s.id]  # the singleton: the same object
        assert db is s
    monkeypatch.undo()
    fresh = dict(zip(*dataset.values(["id", "out"])))
    for s in held:
        assert np.array_equal(s.out.get_mask(), fresh[s.id].get_mask()) and s.out_miou is not None
        assert len(s.out_masks.detections) == len(s.sam.detections)
    # a later edit + save on a held sample keeps what the bulk path wrote
    held[0]["note"] = "edited"
    held[0].save()
    assert dataset.values("out")[0] is not None


def _state(label):
    """Everything mongoengine keeps on a label object, arrays as lists."""
    from sepl.fo._fill import _slots

    def plain(v):
        return v.tolist() if isinstance(v, np.ndarray) else v

    def slot(name, v):
        if name == "_dynamic_fields":  # field objects: compare what they say
            return [(k, f.name, f.db_field, type(f).__name__, f.null) for k, f in v.items()]
        return type(v).__name__ if name == "_instance" else plain(v)  # the parent label or None

    slots = {n: slot(n, getattr(label, n)) for n in _slots(type(label)) if n != "_data" and hasattr(label, n)}
    return ({k: plain(v) for k, v in vars(label).items()}, slots, {k: plain(v) for k, v in label._data.items()},
            label.to_dict())


@pytest.mark.parametrize("name, raw", [
    ("bounding_box", [0.1, 0.2, 0.3, 0.4]), ("bounding_box", [0, 1, 0.5, 0.5]), ("bounding_box", []),
    ("tags", []), ("tags", ["a", "b"]), ("tags", ["a", 1]), ("attributes", {}),
    ("attributes", {"x": {"_cls": "Attribute", "value": 1}}), ("label", "cat"), ("label", b"cat"),
    ("confidence", 0.5), ("confidence", 1), ("any_list", [1, "a"]), ("any_list", []),
])
def test_held_value_converters_match_mongoengine(name, raw):
    """The copies' shortcuts (``_fill._converter``) give what the field's ``to_python`` gives."""
    import fiftyone.core.fields as fo_fields
    import fiftyone.core.labels as fol

    from sepl.fo._fill import _converter

    field = fol.Detection._fields[name] if name != "any_list" else fo_fields.ListField()
    mine, theirs = _converter(field)(raw), field.to_python(raw)

    def kinds(v):
        if isinstance(v, list):
            return [type(v).__name__] + [kinds(x) for x in v]
        if isinstance(v, dict):
            return [type(v).__name__] + [(k, kinds(x)) for k, x in v.items()]
        return type(v).__name__

    assert mine == theirs and kinds(mine) == kinds(theirs)
    if isinstance(raw, list):
        assert mine is not raw  # the stored list is never shared


def test_held_detections_are_the_objects_fiftyone_builds(dataset):
    """Held samples' decision detections are copied from one built detection's state
    (``_fill._detections``): each must equal what FiftyOne builds from the stored document,
    and behave as one (new attributes stay on their detection, edits save)."""
    import fiftyone.core.labels as fol

    from sepl.fo import refine

    held = fill(dataset, n=3)
    for det in held[0].sam.detections[2:4]:  # values the copies convert, not only defaults
        det.tags = ["checked"]
        det.confidence = 1
    held[0].save()
    refine(dataset, "seeds", "sam", "out", num_workers=1)
    stored = {d["_id"]: d["out_masks"] for d in dataset._sample_collection.find({}, {"out_masks": 1})}
    for s in held:
        built = fol.Detections._from_son(dict(stored[s._id]))  # FiftyOne's own (decodes the masks)
        assert len(s.out_masks.detections) == len(built.detections) > 2
        assert _state(s.out_masks)[2].keys() == _state(built)[2].keys()
        for mine, theirs in zip(s.out_masks.detections, built.detections):
            assert _state(mine) == _state(theirs)
    loaded = dataset.select_fields("out_masks").first().out_masks  # as FiftyOne loads a sample
    assert type(held[0].out_masks._instance) is type(loaded._instance)
    dets = held[0].out_masks.detections
    dets[1]["reviewed"] = True
    dets[2].label = "cat"
    assert "reviewed" not in dets[2]._dynamic_fields and "reviewed" not in dets[0]._dynamic_fields
    held[0].save()
    again = dataset._sample_collection.find_one({"_id": held[0]._id})["out_masks"]["detections"]
    assert again[1]["reviewed"] is True and "reviewed" not in again[2] and again[2]["label"] == "cat"
    assert again[3] == stored[held[0]._id]["detections"][3]


def test_held_decisions_take_masks_from_the_held_source_not_a_second_inflate(dataset, monkeypatch):
    """Refine's decisions copy the masks field's bytes, so held samples lend their decoded
    source masks (``_fill._source_masks``): same arrays as stored, never shared with the
    source, and a source with unsaved changes is not lent from."""
    import sepl.labels.raw as raw

    from sepl.fo import refine

    held = fill(dataset, n=3)
    edited = held[1].sam.detections[0]
    edited.mask = ~edited.mask  # unsaved, same dtype and shape: only the change tracking tells
    inflated = []
    real = raw.decode_array
    # the masks the held-sample patch inflates (``_fill._decoded``), not the merge's
    monkeypatch.setattr(raw, "decode_array",
                        lambda b: (sys._getframe(1).f_code.co_name == "arrays" and inflated.append(b)) or real(b))
    refine(dataset, "seeds", "sam", "out", num_workers=1)
    monkeypatch.undo()
    stored = {d["_id"]: d["out_masks"] for d in dataset._sample_collection.find({}, {"out_masks": 1})}
    mask_bytes = {d["mask"] for doc in stored.values() for d in doc["detections"] if isinstance(d.get("mask"), bytes)}
    for s in held:
        for mine, doc in zip(s.out_masks.detections, stored[s._id]["detections"]):
            want = raw.decode_array(doc["mask"])
            assert mine.mask.dtype == want.dtype and np.array_equal(mine.mask, want)
    # of the decisions' masks only the one whose source changed is inflated
    assert len(mask_bytes) > 30 and sum(b in mask_bytes for b in inflated) == 1
    assert not np.array_equal(held[1].out_masks.detections[0].mask, edited.mask)
    src, copy = held[0].sam.detections[3], held[0].out_masks.detections[3]
    assert src.id == copy.id and copy.mask is not src.mask
    copy.mask[:] = ~copy.mask
    assert not np.array_equal(copy.mask, src.mask)


def test_oversize_update_goes_to_disk_and_reads_back(dataset, monkeypatch, tmp_path, caplog):
    from sepl.fo import _fill, refine
    from sepl.fo.convert import load_masks

    fill(dataset, n=4)
    monkeypatch.setattr(_fill, "_SAFE", 2000)  # every decisions document counts as "too large"
    with caplog.at_level("WARNING"):
        assert refine(dataset, "seeds", "sam", "out", num_workers=1, mask_dir=str(tmp_path)) == 4
    assert "16 MB document limit" in caplog.text
    s = dataset.first()
    assert all(d.mask_path is None or d.mask_path.startswith(str(tmp_path)) for d in s.out_masks.detections)
    assert any(d.mask_path for d in s.out_masks.detections)
    assert np.array_equal(load_masks(s, "out_masks", (60, 80)), load_masks(s, "sam", (60, 80)))
    # a refine reading masks stored that way gives the same labels
    monkeypatch.setattr(_fill, "_SAFE", _fill.DOC_LIMIT - 512 * 1024)
    refine(dataset, "seeds", "out_masks", "again", num_workers=1, store_decisions=False)
    for a, b in zip(dataset.values("out"), dataset.values("again")):
        assert np.array_equal(a.get_mask(), b.get_mask())


def test_sample_over_16mb_in_the_database_is_a_named_failure_not_a_crash(dataset, tmp_path):
    import bson

    from sepl.fo import refine

    fill(dataset, n=3)
    big = dataset.first()
    # the document is already just under 16 MB (e.g. other fields): nothing more fits
    coll = dataset._sample_collection
    size = len(bson.encode(coll.find_one({"_id": bson.ObjectId(big.id)})))
    coll.update_one({"_id": bson.ObjectId(big.id)},
                    {"$set": {"blob": bson.Binary(os.urandom(16 * 1024 * 1024 - size - 1000))}})
    with pytest.raises(SeplError, match="16 MB") as e:
        refine(dataset, "seeds", "sam", "out", num_workers=1, mask_dir=str(tmp_path))
    assert big.id in str(e.value) and "(2 written)" in str(e.value)
    assert len(dataset.exists("out")) == 2


def test_gc_pause_restores_the_collector_state():
    """The held-sample patch pauses cyclic GC and restores what it found, errors included."""
    import gc

    from sepl.fo._fill import _gc_paused

    assert gc.isenabled()
    with _gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        with _gc_paused():
            raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with _gc_paused():
            pass
        assert not gc.isenabled()  # a caller's own pause is left alone
    finally:
        gc.enable()


def test_seed_check_names_values_outside_the_targets_and_allows_ignore():
    from sepl.labels.refine import check_seed

    seed = np.zeros((20, 30), np.uint8)
    seed[:5] = 255
    seed[5:8] = 20
    check_seed(seed, 21, "seeds")  # 0..20 and 255: fine
    seed[10, :4] = [21, 40, 21, 254]
    with pytest.raises(SeplError, match=r"seed 'seeds' holds classes \[21, 40, 254\]"):
        check_seed(seed, 21, "seeds")


def test_default_workers_start_processes_only_when_the_run_pays_for_them(dataset, monkeypatch):
    """All cores by default, but a run whose first rows say it would end before two spawned
    workers start is computed in this process; same outputs either way."""
    import sepl.fo._fill as fill_mod
    import sepl.labels.pool as pool

    from sepl.fo import refine

    started = []
    real = pool.ProcessPoolExecutor
    monkeypatch.setattr(pool, "ProcessPoolExecutor", lambda *a, **k: started.append(1) or real(*a, **k))
    monkeypatch.setattr(pool, "default_workers", lambda: 2)
    fill(dataset, n=20)
    refine(dataset, "seeds", "sam", "small")  # 20 tiny samples: ~ms of work
    assert started == []
    monkeypatch.setattr(fill_mod, "_SPAWN_PAYS_S", 0.0)  # as if the rest were long
    refine(dataset, "seeds", "sam", "big", chunk_size=8)
    assert started == [1]
    small, big = _outputs(dataset, "small"), _outputs(dataset, "big")
    assert small.keys() == big.keys()
    for sid in small:
        assert np.array_equal(small[sid][0], big[sid][0]) and small[sid][1] == big[sid][1]
