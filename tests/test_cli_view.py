"""``sepl view``: saved views from the command line, read back by ``--view`` of other commands."""

from pathlib import Path


def _cli(capsys, *argv):
    from sepl.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_save_list_delete_and_use_a_saved_view(synth_dataset, tmp_path, capsys):
    ds = synth_dataset
    ds.persistent = True  # the CLI loads it by name
    paths = ds.values("filepath")
    code, out, err = _cli(capsys, "view", "save", "--dataset", ds.name, "--name", "first3", "--limit", 3)
    assert code == 0, err
    assert ds.load_saved_view("first3").values("id") == ds.limit(3).values("id")
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{Path(paths[5]).name}\n{Path(paths[6]).stem}\n")
    assert _cli(capsys, "view", "save", "--dataset", ds.name, "--name", "mine", "--ids", ids)[0] == 0
    assert sorted(ds.load_saved_view("mine").values("filepath")) == sorted(paths[5:7])
    # a name in use is refused unless --overwrite; an empty view is refused; both change nothing
    code, _, err = _cli(capsys, "view", "save", "--dataset", ds.name, "--name", "first3", "--limit", 2)
    assert code == 1 and "--overwrite" in err and len(ds.load_saved_view("first3")) == 3
    code, _, err = _cli(capsys, "view", "save", "--dataset", ds.name, "--name", "none", "--missing", "ground_truth")
    assert code == 1 and "no sample" in err and not ds.has_saved_view("none")
    code, out, _ = _cli(capsys, "view", "list", "--dataset", ds.name)
    assert "first3: 3 samples" in out and "mine: 2 samples" in out
    # another command reads it: evaluate on the saved view scores only its samples
    ds.clone_sample_field("ground_truth", "pred")
    code, out, err = _cli(capsys, "evaluate", "--dataset", ds.name, "--view", "first3", "--pred", "pred",
                          "--gt", "ground_truth")
    assert code == 0, err
    assert sorted(ds.exists("pred_miou").values("id")) == sorted(ds.limit(3).values("id"))
    assert _cli(capsys, "view", "delete", "--dataset", ds.name, "--name", "mine")[0] == 0
    assert not ds.has_saved_view("mine")
