"""Run records never lose or mix data (issue 15, items 1-3).

1. ``overwrite`` on a view replaces only what the view covers, and is refused when the field
   would then mix two parameter sets; the record lists every run that wrote the field.
2. Concurrent runs into one field (two real processes on one database): other parameters are
   refused at start, identical ones share the samples (each computed exactly once), a killed
   run's lease expires.
3. A run with bad arguments, or one that wrote nothing, leaves nothing behind: the corrected
   rerun starts without ``overwrite``.

Every refusal is checked against a snapshot of everything stored (sample documents, schema,
run records, mask targets): nothing changes.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from sepl.errors import SeplError
from sepl.synth import SYNTH_CLASSES

from test_fo_pipeline import make_inputs

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def voc_ds(dataset, synth_voc, tmp_path, rng):
    """8 generated VOC scenes with ``seeds`` and ``sam`` masks (the inputs of refine)."""
    from sepl.fo import importers

    seeds, masks = make_inputs(synth_voc, tmp_path / "inputs", rng)
    importers.import_voc(synth_voc, dataset=dataset, classes=SYNTH_CLASSES)
    importers.import_seeds(dataset, seeds, "seeds")
    importers.import_masks(dataset, masks, "sam")
    dataset.info["seeds_dir"] = str(seeds)
    dataset.save()
    return dataset


def docs(ds):
    """Every stored sample document, by id."""
    return {str(d["_id"]): d for d in ds._sample_collection.find()}


def snapshot(ds):
    """Everything a run could change: sample documents, schema, run records, mask targets."""
    ds.reload()
    records = {k: ds.get_run_info(k).config.serialize() for k in ds.list_runs()}
    return docs(ds), sorted(ds.get_field_schema()), records, dict(ds.mask_targets)


def refine(view, out="sepl", **kw):
    from sepl.fo.refine import refine as _refine

    return _refine(view, "seeds", "sam", out, num_workers=1, **kw)


# ---------------------------------------------------------------------------------------
# 1. overwrite on a view


def test_overwrite_on_view_replaces_only_the_view(voc_ds):
    ds = voc_ds
    assert refine(ds) == 8
    before = docs(ds)
    view = ds.limit(3)
    inside = set(view.values("id"))
    assert refine(view, overwrite=True) == 3
    after = docs(ds)
    assert len(ds.exists("sepl")) == 8 and len(ds.exists("sepl_masks")) == 8
    for sid, doc in after.items():
        if sid in inside:  # recomputed: same parameters, same values, written again
            assert doc["last_modified_at"] > before[sid]["last_modified_at"]
            assert doc["sepl"]["mask"] == before[sid]["sepl"]["mask"]
        else:  # untouched
            assert doc == before[sid]
    from sepl.fo.runs import run_history

    history = run_history(ds, "sepl")
    assert [h["samples"] for h in history] == [8, 3]
    assert history[0]["view"] == "dataset" and "Limit" in history[1]["view"]
    assert all(h["status"] == "done" for h in history)


def test_partial_overwrite_with_other_parameters_is_refused(voc_ds):
    ds = voc_ds
    refine(ds)
    before = snapshot(ds)
    with pytest.raises(SeplError) as e:
        refine(ds.limit(3), mode="official", overwrite=True)
    msg = str(e.value)
    assert "would mix two parameter sets in 'sepl'" in msg and "5 sample(s) outside the view" in msg
    assert "mode: 'paper' -> 'official'" in msg
    assert snapshot(ds) == before


def test_overwrite_of_the_whole_field_with_other_parameters_replaces_record(voc_ds):
    ds = voc_ds
    refine(ds)
    assert refine(ds, mode="official", overwrite=True) == 8
    assert ds.get_run_info("sepl_sepl").config.serialize()["mode"] == "official"
    from sepl.fo.runs import run_history

    # the history starts again with the new parameters: no run of the old ones is listed
    assert [h["samples"] for h in run_history(ds, "sepl")] == [8]


def test_import_seeds_overwrite_on_view_replaces_only_the_view(voc_ds):
    from sepl.fo import importers
    from sepl.labelio import read_label, write_label

    ds = voc_ds
    folder = Path(ds.info["seeds_dir"])
    for png in folder.glob("*.png"):  # the files change: an overwrite re-reads them
        write_label(png, np.zeros_like(read_label(png)))
    before = docs(ds)
    view = ds.limit(2)
    inside = set(view.values("id"))
    assert importers.import_seeds(view, folder, "seeds", overwrite=True) == 2
    after = docs(ds)
    assert len(ds.exists("seeds")) == 8
    for sid, doc in after.items():
        if sid in inside:
            assert doc["seeds"]["mask"] != before[sid]["seeds"]["mask"]
        else:
            assert doc == before[sid]


def test_masks_overwrite_on_view_replaces_only_the_view(synth_dataset):
    from sepl.fo.masks import generate_masks

    ds = synth_dataset
    params = {"scales": [300], "max_side": 64}
    generate_masks(ds, "sp", source="superpixels", params=params)
    before = docs(ds)
    view = ds.limit(2)
    inside = set(view.values("id"))
    assert generate_masks(view, "sp", source="superpixels", params=params, overwrite=True)["processed"] == 2
    assert len(ds.exists("sp")) == len(ds)
    for sid, doc in docs(ds).items():
        if sid not in inside:
            assert doc == before[sid]
    other = dict(params, scales=[100])
    snap = snapshot(ds)
    with pytest.raises(SeplError, match="would mix two parameter sets"):
        generate_masks(view, "sp", source="superpixels", params=other, overwrite=True)
    assert snapshot(ds) == snap


def test_cli_overwrite_on_saved_view(voc_ds, capsys):
    from sepl.cli import main

    ds = voc_ds
    ds.persistent = True  # the CLI loads it by name
    ds.save_view("first3", ds.limit(3))
    args = ["refine", "--dataset", ds.name, "--seeds", "seeds", "--masks", "sam", "--out", "sepl"]
    assert main(args) == 0
    outside = {k: v for k, v in docs(ds).items() if k not in set(ds.limit(3).values("id"))}
    assert main(args + ["--view", "first3", "--overwrite"]) == 0
    assert "written on 3 samples" in capsys.readouterr().out
    assert len(ds.exists("sepl")) == 8 and len(ds.exists("sepl_masks")) == 8
    assert all(docs(ds)[k] == v for k, v in outside.items())
    before = snapshot(ds)
    assert main(args + ["--view", "first3", "--overwrite", "--mode", "official"]) == 1
    assert "would mix two parameter sets" in capsys.readouterr().err
    assert snapshot(ds) == before


# ---------------------------------------------------------------------------------------
# 2. concurrent runs: two real processes on the shared database

CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import fiftyone as fo
    import sepl.labels.refine as lr
    from sepl.errors import SeplError
    from sepl.fo.refine import refine

    name, out, mode, tag, flags = sys.argv[1:6]
    flags = Path(flags)
    wait_for = os.environ.get("WAIT_FOR")  # a flag this process waits for after its first sample
    delay = float(os.environ.get("DELAY", "0"))
    compute = lr.RefineJob.__call__

    def counted(self, row):  # test-only hook: which process computed which sample
        with open(flags / f"computed_{tag}", "a") as f:
            f.write(row["id"] + "\\n")
        first = not (flags / f"started_{tag}").exists()
        (flags / f"started_{tag}").touch()
        if first and wait_for:
            t0 = time.time()
            while not (flags / wait_for).exists() and time.time() - t0 < 60:
                time.sleep(0.05)
        time.sleep(delay)
        return compute(self, row)

    lr.RefineJob.__call__ = counted
    ds = fo.load_dataset(name)
    (flags / f"ready_{tag}").touch()
    try:
        n = refine(ds, "seeds", "sam", out, mode=mode, num_workers=1, chunk_size=1)
    except SeplError as e:
        print(e, file=sys.stderr)
        sys.exit(3)
    print("wrote", n)
""")


def _spawn(ds, out, mode, tag, flags, **env):
    e = dict(os.environ, PYTHONPATH=str(REPO), **{k: str(v) for k, v in env.items()})
    return subprocess.Popen([sys.executable, "-c", CHILD, ds.name, out, mode, tag, str(flags)], env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_flag(path: Path, proc, timeout: float = 120) -> None:
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process ended before {path.name}: {proc.communicate()}")
        if time.time() - t0 > timeout:
            raise AssertionError(f"no {path.name} after {timeout} s")
        time.sleep(0.05)


def _computed(flags: Path, tag: str):
    f = flags / f"computed_{tag}"
    return f.read_text().split() if f.exists() else []


def test_concurrent_run_with_other_parameters_is_refused(voc_ds, tmp_path):
    ds = voc_ds
    ds.persistent = True
    flags = tmp_path / "flags"
    flags.mkdir()
    # A (paper) holds the field and waits after its first sample until B has given up
    a = _spawn(ds, "cc", "paper", "a", flags, WAIT_FOR="b_done")
    _wait_flag(flags / "started_a", a)
    b = _spawn(ds, "cc", "official", "b", flags)
    _, err_b = b.communicate(timeout=180)
    (flags / "b_done").touch()
    out_a, err_a = a.communicate(timeout=180)
    assert a.returncode == 0, err_a
    assert b.returncode == 3, err_b
    assert "is being written right now by another 'refine' run with other parameters" in err_b
    assert "mode: 'paper' -> 'official'" in err_b
    assert _computed(flags, "b") == []
    ds.reload()
    assert len(ds.exists("cc")) == 8
    assert ds.get_run_info("sepl_cc").config.serialize()["mode"] == "paper"
    from sepl.fo.runs import run_history

    assert [h["samples"] for h in run_history(ds, "cc")] == [8]


def test_concurrent_identical_runs_compute_each_sample_once(voc_ds, tmp_path):
    ds = voc_ds
    ds.persistent = True
    flags = tmp_path / "flags"
    flags.mkdir()
    # A starts and, after its first sample, waits until B is ready to run; both then go slowly
    a = _spawn(ds, "cc", "paper", "a", flags, WAIT_FOR="ready_b", DELAY=0.8)
    _wait_flag(flags / "started_a", a)
    b = _spawn(ds, "cc", "paper", "b", flags, DELAY=0.8)
    out_b, err_b = b.communicate(timeout=180)
    out_a, err_a = a.communicate(timeout=180)
    assert a.returncode == 0 and b.returncode == 0, (err_a, err_b)
    ca, cb = _computed(flags, "a"), _computed(flags, "b")
    ids = sorted(ds.values("id"))
    assert sorted(ca + cb) == ids  # every sample computed exactly once across the two
    assert ca and cb  # and both took part
    ds.reload()
    assert len(ds.exists("cc")) == 8 and len(ds.exists("cc_masks")) == 8
    from sepl.fo.runs import run_history

    history = run_history(ds, "cc")
    assert sorted(h["samples"] for h in history) == sorted([len(ca), len(cb)])
    assert sorted(h["joined"] for h in history) == [False, True]
    from sepl.fo.runs import CLAIMS, _db

    assert _db()[CLAIMS].count_documents({"lease": {"$regex": f"^{ds._doc.id}:"}}) == 0  # released


def test_killed_run_does_not_block_a_rerun(voc_ds, tmp_path):
    """A run killed (SIGKILL) mid-run on this machine: its pid is gone, so the rerun proceeds
    at once and computes every sample (the killed one had written nothing)."""
    ds = voc_ds
    ds.persistent = True
    flags = tmp_path / "flags"
    flags.mkdir()
    a = _spawn(ds, "cc", "paper", "a", flags, WAIT_FOR="never")
    _wait_flag(flags / "started_a", a)
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=30)
    assert refine(ds, "cc") == 8
    assert len(ds.exists("cc")) == 8


def test_lease_of_a_silent_run_elsewhere_expires(voc_ds, monkeypatch):
    """A holder on another machine that stopped beating blocks other parameters until its
    lease expires (``SEPL_LEASE_TTL``), then the run proceeds."""
    from datetime import datetime, timedelta, timezone

    from sepl.fo import runs

    ds = voc_ds
    monkeypatch.setenv("SEPL_LEASE_TTL", "3")
    refine(ds, "cc")
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    ghost = {"owner": "ghost", "pid": 1, "host": "elsewhere", "since": now, "expires": now + timedelta(seconds=3)}
    runs._db()[runs.LEASES].update_one({"_id": f"{ds._doc.id}:cc"},
                                       {"$set": {"hash": "other", "method": "refine", "params": "{}",
                                                 "state": "running", "shared": True}, "$push": {"holders": ghost}})
    before = snapshot(ds)
    with pytest.raises(SeplError, match="is being written right now by another 'refine' run.*elsewhere"):
        refine(ds, "cc")
    assert snapshot(ds) == before
    time.sleep(3.5)
    assert refine(ds, "cc") == 0  # expired: the identical rerun resumes (nothing missing)


# ---------------------------------------------------------------------------------------
# 3. bad arguments and runs that wrote nothing leave nothing behind


def test_leases_of_deleted_datasets_are_pruned(voc_ds, monkeypatch):
    """A deleted dataset's lease record (its run history) and claims go at the next run."""
    import fiftyone as fo

    from sepl.fo import runs

    monkeypatch.setattr(runs, "_pruned", False)  # as in a fresh process
    db = runs._db()
    other = fo.Dataset()
    gone = f"{other._doc.id}:sepl"
    db[runs.LEASES].insert_one({"_id": gone, "holders": [], "history": [{"method": "refine"}]})
    db[runs.CLAIMS].insert_one({"_id": "x", "lease": gone, "owner": "nobody"})
    other.delete()
    refine(voc_ds)  # the first run of a process prunes
    mine = f"{voc_ds._doc.id}:sepl"
    assert db[runs.LEASES].find_one({"_id": gone}) is None and db[runs.CLAIMS].find_one({"lease": gone}) is None
    assert runs.run_history(voc_ds, "sepl")  # the live dataset's record stays
    assert db[runs.LEASES].find_one({"_id": mine}) is not None
    assert runs.prune_leases() == 0


@pytest.mark.parametrize("kw,message", [
    (dict(mode="bogus"), "unknown merge mode 'bogus'"),
    (dict(op_thresh=1.5), "op_thresh must be in [0, 1]"),
    (dict(os_thresh=-0.1), "os_thresh must be in [0, 1]"),
    (dict(chunk_size=0), "chunk_size must be an integer >= 1"),
])
def test_refine_bad_arguments_create_nothing(voc_ds, kw, message):
    ds = voc_ds
    before = snapshot(ds)
    with pytest.raises(SeplError) as e:
        refine(ds, "out", **kw)
    assert message in str(e.value)
    assert snapshot(ds) == before
    assert not ds.has_field("out") and not ds.has_run("sepl_out")
    assert refine(ds, "out") == 8  # the corrected rerun needs no overwrite


def test_refine_that_wrote_nothing_leaves_nothing(voc_ds):
    ds = voc_ds
    ds.limit(2).clear_sample_field("sam")  # these two cannot be merged
    before = snapshot(ds)
    with pytest.raises(SeplError, match="2 sample\\(s\\) could not be processed"):
        refine(ds.limit(2), "out")
    assert snapshot(ds) == before  # no field, no run record, no mask targets


@pytest.mark.parametrize("case", ["missing", "corrupt", "wrong_type", "batch_size", "threshold"])
def test_masks_bad_checkpoint_or_arguments_create_nothing(synth_dataset, tmp_path, case):
    import torch

    from sepl.fo.masks import generate_masks

    ds = synth_dataset
    kw = dict(source="sam_auto", model_type="tiny", params={"points_per_side": 4})
    if case == "missing":
        kw["checkpoint"], message = str(tmp_path / "nope.pth"), "does not exist"
    elif case == "corrupt":
        (tmp_path / "bad.pth").write_bytes(b"not a checkpoint at all")
        kw["checkpoint"], message = str(tmp_path / "bad.pth"), "SAM checkpoint"
    elif case == "wrong_type":
        torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
        kw["checkpoint"], message = str(tmp_path / "other.pth"), "checkpoint"
    elif case == "batch_size":
        kw["batch_size"], message = 0, "batch size must be an integer >= 1"
    else:
        kw["params"], message = {"pred_iou_thresh": 1.2}, "pred_iou_thresh must be in [0, 1]"
    before = snapshot(ds)
    with pytest.raises(SeplError) as e:
        generate_masks(ds, "m", **kw)
    assert message in str(e.value)
    assert snapshot(ds) == before
    assert not ds.has_field("m") and not ds.has_run("sepl_m")


def test_masks_corrected_rerun_after_failure_needs_no_overwrite(synth_dataset, tmp_path):
    from sepl.fo.masks import generate_masks

    ds = synth_dataset
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    with pytest.raises(SeplError):
        generate_masks(ds, "m", source="sam_auto", model_type="tiny", checkpoint=str(tmp_path / "bad.pth"))
    out = generate_masks(ds, "m", source="superpixels", params={"scales": [300], "max_side": 64})
    assert out["processed"] == len(ds)


def test_import_cams_bad_threshold_creates_nothing(voc_ds, tmp_path):
    from sepl.fo import importers

    ds = voc_ds
    (tmp_path / "cams").mkdir()
    before = snapshot(ds)
    with pytest.raises(SeplError, match=r"bg_threshold must be in \[0, 1\]"):
        importers.import_cams(ds, tmp_path / "cams", field="cam_seeds", bg_threshold=1.5)
    assert snapshot(ds) == before


def test_cli_unknown_mode_creates_nothing(voc_ds, capsys):
    from sepl.cli import main

    ds = voc_ds
    ds.persistent = True
    before = snapshot(ds)
    args = ["refine", "--dataset", ds.name, "--seeds", "seeds", "--masks", "sam", "--out", "x"]
    assert main(args + ["--mode", "oficial"]) == 1
    assert "unknown merge mode 'oficial'" in capsys.readouterr().err
    assert snapshot(ds) == before
    assert main(args) == 0
