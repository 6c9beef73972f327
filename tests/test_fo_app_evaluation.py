"""sepl evaluations in the real App's Model Evaluation panel (headless Chromium): listed, the
Summary shows their mIoU, and clicking a class opens the samples behind it. Skipped where
chromium is absent. Screenshots go to ``$SEPL_ARTIFACTS`` (default: the test's tmp dir)."""

import os
import re
import time
from pathlib import Path

import pytest

from sepl.synth import SYNTH_CLASSES

from test_fo_app import CHROMIUM, Browser, _free_port  # tests/ is on sys.path (no package)
from test_fo_pipeline import make_inputs

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")

# the panel's per-class bar chart hands plotly's click to the panel's "class" view; a synthetic
# mouse click on a histogram bar does not reach plotly's hit test in headless Chromium, so the
# test emits the click plotly would emit
_CLICK_CLASS = """(() => {
    const el = [...document.querySelectorAll('.js-plotly-plot')].find(
        e => JSON.stringify((e.data || []).map(d => d.x)).includes('"%s"'));
    if (!el) return false;
    el.emit('plotly_click', {points: [{x: '%s', pointIndices: [0], pointNumber: 0, curveNumber: 0}]});
    return true; })()"""

_CLICK_TEXT = """(() => { const els = [...document.querySelectorAll('*')].filter(
    e => e.children.length === 0 && e.innerText && e.innerText.trim() === '%s');
    if (!els.length) return false; els[els.length - 1].click(); return true; })()"""


def _counts(browser):
    return re.findall(r"(\d+) samples", browser.text())


@pytest.mark.slow
def test_model_evaluation_panel_shows_sepl_evaluation(synth_voc, tmp_path, rng, monkeypatch):
    import fiftyone as fo

    from sepl.fo import evaluate, importers, refine

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    artifacts = Path(os.environ.get("SEPL_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    seeds, masks = make_inputs(synth_voc, tmp_path / "inputs", rng)
    name = f"sepl-app-eval-test-{os.getpid()}"
    ds = fo.Dataset(name)  # the App's server process loads it by name
    session = browser = None
    try:
        importers.import_voc(synth_voc, dataset=ds, classes=SYNTH_CLASSES)
        importers.import_seeds(ds, seeds, "seeds", progress=lambda f, label: None)
        importers.import_masks(ds, masks, "sam", progress=lambda f, label: None)
        refine(ds, "seeds", "sam", "sepl")
        _, res = evaluate(ds, ["seeds", "sepl"], "ground_truth")
        port = _free_port()
        spaces = fo.Space(children=[fo.Panel(type="Samples", pinned=True),
                                    fo.Panel(type="model_evaluation_panel_builtin")], orientation="horizontal")
        session = fo.launch_app(ds, remote=True, address="127.0.0.1", port=port, auto=False, spaces=spaces)
        browser = Browser(width=1600, height=1000)
        browser.call("Page.navigate", session=True, url=f"http://127.0.0.1:{port}/datasets/{name}")
        assert browser.wait_text("2 Model Evaluations", timeout=120), browser.text()[-2000:]
        time.sleep(3)
        assert browser.js(_CLICK_TEXT % "sepl"), "the evaluation 'sepl' is not listed"
        assert browser.wait_text("mIoU", timeout=60), browser.text()[-3000:]
        time.sleep(3)
        browser.screenshot(artifacts / "sepl_model_evaluation_summary.png")
        text = browser.text()
        summary = text[text.find("Summary"):]
        assert f"{res.miou():.3f}" in summary, summary[:1500]
        # background is the "missing" class, as in a native evaluation: the precision shown is ours
        assert f"{res.metrics()['precision']:.3f}" in summary
        # click-through: a class opens the samples whose GT or prediction holds it
        assert browser.js(_CLICK_TEXT % "Class Performance")
        time.sleep(3)
        cls = "disc"
        k = SYNTH_CLASSES.index(cls)
        expect = sum(1 for s in ds if (s.ground_truth.mask == k).any() or (s.sepl.mask == k).any())
        assert 0 < expect < len(ds)
        assert browser.js(_CLICK_CLASS % (cls, cls)), "no per-class chart"
        end = time.time() + 60
        while time.time() < end and _counts(browser)[:1] != [str(expect)]:
            time.sleep(1)
        browser.screenshot(artifacts / "sepl_model_evaluation_class_view.png")
        assert _counts(browser)[:1] == [str(expect)], (_counts(browser), expect)
    finally:
        if browser is not None:
            browser.close()
        if session is not None:
            session.close()
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
