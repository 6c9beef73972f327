"""Shared fixtures: temporary FiftyOne datasets, generated data, and the shared real data."""

import os

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sepl.paths import missing_shared_data_reason, shared_data_required, voc_train_dir  # noqa: E402


@pytest.fixture
def dataset():
    """A temporary, non-persistent FiftyOne dataset, deleted after the test."""
    import fiftyone as fo

    ds = fo.Dataset()
    try:
        yield ds
    finally:
        if fo.dataset_exists(ds.name):
            fo.delete_dataset(ds.name)


@pytest.fixture
def voc_train() -> Path:
    """``../shared/data/voc2012_train`` (real VOC GT + TransCAM seeds); skips when absent,
    fails when ``$SEPL_REQUIRE_SHARED_DATA`` is set (CI: the real-data tests must run)."""
    path = voc_train_dir()
    if path is None:
        if shared_data_required():
            pytest.fail(f"{missing_shared_data_reason()}, and $SEPL_REQUIRE_SHARED_DATA is set (CI)")
        pytest.skip(missing_shared_data_reason())
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def synth_voc(tmp_path) -> Path:
    """A small generated dataset in the VOC layout (8 scenes, 160x200)."""
    from sepl.synth import write_voc_layout

    return write_voc_layout(tmp_path / "synth_voc", num_images=8, seed=0)


@pytest.fixture
def synth_dataset(dataset, synth_voc):
    """``dataset`` filled with the generated scenes: ``ground_truth`` Segmentation, mask targets."""
    import fiftyone as fo

    from sepl.fo.convert import set_mask_targets, to_segmentation
    from sepl.labelio import read_label
    from sepl.synth import SYNTH_CLASSES

    ids = (synth_voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    samples = []
    for sid in ids:
        label = read_label(synth_voc / "SegmentationClass" / f"{sid}.png")
        samples.append(fo.Sample(filepath=str(synth_voc / "JPEGImages" / f"{sid}.jpg"),
                                 ground_truth=to_segmentation(label)))
    dataset.add_samples(samples)
    dataset.compute_metadata()
    set_mask_targets(dataset, "ground_truth", dict(enumerate(SYNTH_CLASSES)))
    return dataset
