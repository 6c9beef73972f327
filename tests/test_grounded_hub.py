"""The transformers Grounding DINO takes hub names: the local cache or a download where a
network exists, a clear error offline; local folders keep working."""

import numpy as np
import pytest

from sepl.errors import SeplError

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from sepl.grounded.tiny import write_tiny_hf_grounding_dino
    from sepl.synth import SYNTH_CLASSES

    return write_tiny_hf_grounding_dino(tmp_path_factory.mktemp("hub") / "gdino", words=SYNTH_CLASSES)


def test_hub_id_rules(tmp_path):
    from sepl.grounded.hub import is_hub_id

    assert is_hub_id("IDEA-Research/grounding-dino-tiny")
    assert not is_hub_id("/abs/folder") and not is_hub_id("./x/y") and not is_hub_id("a/b/c")
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "model").mkdir()
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert not is_hub_id("org/model")  # an existing folder is a folder
    finally:
        os.chdir(cwd)


def test_offline_hub_name_is_a_clear_error(monkeypatch):
    from sepl.grounded.detectors import HFGroundingDino

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SeplError) as e:
        HFGroundingDino("sepl-test-nobody/grounding-dino-none")
    msg = str(e.value)
    assert "'sepl-test-nobody/grounding-dino-none'" in msg and "not in the local Hugging Face cache" in msg
    assert "HF_HUB_OFFLINE is set" in msg and "save_pretrained(DIR)" in msg


def test_hub_name_loads_from_cache_then_download(tiny_folder, monkeypatch):
    """A hub name goes to from_pretrained: cache first, then a download unless offline."""
    import transformers

    from sepl.grounded.detectors import HFGroundingDino

    ref = HFGroundingDino(str(tiny_folder))  # the folder itself, for the same answers
    calls = []

    def fake(orig):
        def from_pretrained(name, local_files_only=False, **kw):
            calls.append((name, local_files_only))
            if local_files_only:
                raise OSError("not in the cache")
            return orig(str(tiny_folder), local_files_only=True, **kw)  # "downloaded"
        return from_pretrained

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for cls in (transformers.AutoProcessor, transformers.GroundingDinoForObjectDetection):
        monkeypatch.setattr(cls, "from_pretrained", fake(cls.from_pretrained))
    det = HFGroundingDino("IDEA-Research/grounding-dino-tiny")
    assert calls[0] == ("IDEA-Research/grounding-dino-tiny", True)
    assert ("IDEA-Research/grounding-dino-tiny", False) in calls
    from sepl.grounded.prompts import build_prompt
    from sepl.synth import SYNTH_CLASSES

    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    prompt = build_prompt(list(SYNTH_CLASSES[1:3]), SYNTH_CLASSES)
    a, b = det.detect([image], [prompt])[0], ref.detect([image], [prompt])[0]
    assert np.allclose(a.boxes, b.boxes) and np.allclose(a.token_scores, b.token_scores)
