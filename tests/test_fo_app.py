"""The real FiftyOne App in headless Chromium, started by the README's command ``sepl demo``
with nothing set by hand: the App's server lists the plugin's operators, "Refine with SEPL"
runs from the operator browser and shows its result, and the SEPL panel opens, plots and
turns a click on a bar into a view. Skipped where chromium is absent.

Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``:
NUL-terminated JSON on fds 3/4), so no extra Python package is needed. A screenshot is left
in ``$SEPL_ARTIFACTS`` (default: the test's tmp dir), never in the repository.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import yaml

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")


class Browser:
    """A headless Chromium page driven with DevTools protocol commands over a pipe."""

    def __init__(self, width=1400, height=900):
        self._to_r, self._to_w = os.pipe()     # we write commands -> chromium fd 3
        self._from_r, self._from_w = os.pipe()  # chromium fd 4 -> we read
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--remote-debugging-pipe",
             f"--window-size={width},{height}", "--user-data-dir=" + os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                                                  f"sepl-chromium-{os.getpid()}"),
             "about:blank"],
            # the pipe ends become fds 3 and 4 in the child; close_fds would close them again
            close_fds=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=self._wire_fds,
        )
        os.close(self._to_r)
        os.close(self._from_w)
        self._buf = b""
        self._id = 0
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)

    def _wire_fds(self):
        # through high numbers first: a pipe end may itself be fd 3 or 4
        os.dup2(self._to_r, 100)
        os.dup2(self._from_w, 101)
        os.dup2(100, 3)
        os.dup2(101, 4)

    def call(self, method, session=False, timeout=30, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        end = time.time() + timeout
        while time.time() < end:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            chunk = os.read(self._from_r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buf += chunk
        raise TimeoutError(method)

    def js(self, expression):
        res = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                        awaitPromise=True)
        return res.get("result", {}).get("value")

    def text(self):
        return self.js("document.body ? document.body.innerText : ''") or ""

    def wait_text(self, needle, timeout=90):
        end = time.time() + timeout
        while time.time() < end:
            if needle in self.text():
                return True
            time.sleep(0.5)
        return False

    def key(self, key, code, text=None, key_code=0):
        for kind in ("keyDown", "keyUp"):
            params = dict(type=kind, key=key, code=code, windowsVirtualKeyCode=key_code)
            if text and kind == "keyDown":
                params["text"] = text
            self.call("Input.dispatchKeyEvent", session=True, **params)

    def type(self, text):
        self.call("Input.insertText", session=True, text=text)

    def screenshot(self, path):
        import base64

        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._to_w)
        os.close(self._from_r)

    def click_at(self, x, y):
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y, button="left", clickCount=1)

    def click_text(self, text, tags="button,li,div,span,p"):
        """Click the innermost element whose text is ``text``; False when there is none."""
        return self.js(
            "(() => { const els=[...document.querySelectorAll('" + tags + "')].filter(e => e.innerText && "
            "e.innerText.trim() === " + json.dumps(text) + "); const t=els[els.length-1]; "
            "if (!t) return false; t.click(); return true; })()")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Demo:
    """``python -m sepl demo ...`` (the README's ``sepl demo``) in its own process, with a
    home folder of its own, so FiftyOne's default plugins folder starts empty and nothing
    names the plugin: neither FIFTYONE_PLUGINS_DIR nor fo.config."""

    def __init__(self, tmp_path, name, port, num_images=6):
        self.home = tmp_path / "home"
        self.home.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "FIFTYONE_PLUGINS_DIR"}
        env.update(HOME=str(self.home), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "sepl", "demo", "--num-images", str(num_images), "--seeds", "simulated",
               "--masks", "superpixels", "--name", name, "--data-dir", str(tmp_path / "data"),
               "--output", str(tmp_path / "out"), "--port", str(port), "--fresh"]
        self.proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()

    def wait_for(self, needle, timeout):
        end = time.time() + timeout
        while time.time() < end:
            if any(needle in line for line in self.lines):
                return True
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        return False

    def output(self):
        return "".join(self.lines)[-4000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # the demo closes its App session on Ctrl-C
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _shot(browser, artifacts, name):
    browser.screenshot(artifacts / name)


@pytest.mark.slow
def test_demo_app_serves_the_plugin_runs_refine_and_opens_the_panel(tmp_path):
    import fiftyone as fo

    from sepl.fo.app import served_operators

    artifacts = Path(os.environ.get("SEPL_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    name = f"sepl-app-test-{os.getpid()}-{int(time.time())}"
    port = _free_port()
    demo = Demo(tmp_path, name, port)
    browser = None
    try:
        assert demo.wait_for("press Ctrl-C to stop", timeout=900), demo.output()
        # the App server itself lists every operator and the panel
        manifest = yaml.safe_load((REPO / "fiftyone.yml").read_text())
        assert set(served_operators(port, name)) == set(manifest["operators"]) | set(manifest["panels"])
        assert "the App serves the sepl plugin" in demo.output()
        link = demo.home / "fiftyone" / "__plugins__" / "sepl"
        assert link.is_symlink() and link.resolve() == REPO

        browser = Browser(height=1200)
        browser.call("Page.navigate", session=True, url=f"http://127.0.0.1:{port}/datasets/{name}?view=worst-samples")
        assert browser.wait_text("6 samples", timeout=180), "the App did not show the dataset"
        time.sleep(3)
        # the grid tiles name their numbers ("SEPL 77.3%"), not three bare fractions
        assert browser.wait_text("SEPL ", timeout=60) and re.search(r"SEPL \d+\.\d%", browser.text())
        _shot(browser, artifacts, "sepl_grid.png")
        browser.click_text("Dismiss")  # the Enterprise teaser covers the grid's corner
        browser.js("document.body.focus()")
        browser.key("`", "Backquote", text="`", key_code=192)
        assert browser.wait_text("Refine with SEPL", timeout=30), browser.text()[:2000]
        listing = browser.text()
        for label in ("Evaluate segmentation (mIoU)", "Show worst samples", "Generate masks", "Train DeepLab",
                      "Generate CAM seeds"):
            assert label in listing, label
        _shot(browser, artifacts, "sepl_operator_browser.png")
        browser.type("Refine with SEPL")
        time.sleep(1)
        browser.key("Enter", "Enter", text="\r", key_code=13)
        assert browser.wait_text("Seed field", timeout=60), browser.text()[:2000]
        time.sleep(2)
        # a new output field ("sepl" is the demo's), scored against the ground truth (the default)
        assert browser.js("(() => { const i=[...document.querySelectorAll('input')].find("
                          "i => i.value === 'sepl' && i.type === 'text'); if (!i) return false; i.focus(); "
                          "i.select(); return true; })()"), "no output field input"
        browser.type("sepl_app")
        assert browser.wait_text("Score against", timeout=30)
        time.sleep(2)
        _shot(browser, artifacts, "sepl_refine_form.png")
        assert browser.click_text("Execute", tags="button"), "no Execute button in the form"
        assert browser.wait_text("Refine with SEPL wrote", timeout=300), browser.text()[-2000:]
        time.sleep(2)
        _shot(browser, artifacts, "sepl_refine_result.png")
        text = re.sub(r"\s+", " ", browser.text().replace("\u200b", ""))
        result = text[text.find("Refine with SEPL wrote"):][:1500]
        assert "samples written: 6" in result and "failed: 0" in result, result
        assert re.search(r"Dataset mIoU: \d+\.\d% before, \d+\.\d% after", result), result
        # the per-class chart below the table
        browser.js("(() => { const p = document.querySelector('.js-plotly-plot'); if (p) p.scrollIntoView(); })()")
        time.sleep(2)
        _shot(browser, artifacts, "sepl_refine_result_chart.png")
        assert browser.js("document.querySelectorAll('.js-plotly-plot .point path').length") >= 12
        ds = fo.load_dataset(name)
        assert ds.count("sepl_app") == 6 and ds.count("sepl_app_masks") == 6
        browser.click_text("Done", tags="button")
        time.sleep(1)

        # "Evaluate segmentation (mIoU)" with its defaults (sepl against ground_truth): its dialog
        browser.js("document.body.focus()")
        browser.key("`", "Backquote", text="`", key_code=192)
        assert browser.wait_text("Evaluate segmentation (mIoU)", timeout=30)
        browser.type("Evaluate segmentation")
        time.sleep(1)
        browser.key("Enter", "Enter", text="\r", key_code=13)
        assert browser.wait_text("Prediction field", timeout=60), browser.text()[:2000]
        time.sleep(2)
        assert browser.click_text("Execute", tags="button")
        if not browser.wait_text("Evaluation sepl of sepl", timeout=300):
            _shot(browser, artifacts, "sepl_evaluate_failed.png")
            raise AssertionError(browser.text()[-3000:])
        time.sleep(2)
        _shot(browser, artifacts, "sepl_evaluate_result.png")
        text = re.sub(r"\s+", " ", browser.text())
        assert re.search(r"sepl: dataset mIoU \d+\.\d% over 6 samples", text), text[-1500:]
        browser.click_text("Done", tags="button")
        time.sleep(1)

        # the SEPL panel from the grid's "New panel" menu
        browser.js("document.querySelector('[title=\"New panel\"]').click()")
        time.sleep(1)
        assert browser.click_text("SEPL", tags="li,div,span,p"), "the panel is not in the New panel menu"
        assert browser.wait_text("Dataset mIoU", timeout=120), browser.text()[-2000:]
        assert browser.wait_text("CAM fallback", timeout=60)
        time.sleep(6)  # plotly draws after the panel's layout settles
        # the panel's scroll box may have followed a focused dropdown: back to its top
        browser.js("(() => { let e = document.querySelector('.js-plotly-plot'); "
                   "while (e) { if (e.scrollTop > 0) e.scrollTop = 0; e = e.parentElement; } })()")
        time.sleep(2)
        _shot(browser, artifacts, "sepl_panel.png")
        bars = json.loads(browser.js(
            "JSON.stringify([...document.querySelectorAll('.js-plotly-plot')].map(p => [...p.querySelectorAll("
            "'.point path')].map(e => { const r = e.getBoundingClientRect(); return [r.x + r.width / 2, "
            "r.y + r.height / 2, r.height]; })))"))
        assert len(bars) == 2 and len(bars[0]) >= 6, bars  # per-class bars and the histogram
        x, y, _ = max(bars[0], key=lambda b: b[2])  # the tallest class bar
        browser.click_at(x, y)
        # the handler sets the App's view to that class's samples and says so in the panel
        assert browser.wait_text("samples, lowest IoU first", timeout=90), browser.text()[-2000:]
        time.sleep(4)
        _shot(browser, artifacts, "sepl_panel_after_click.png")
        assert "Showing" in browser.text()
        # a histogram bin: the samples whose mIoU lies in it
        browser.js("document.querySelectorAll('.js-plotly-plot')[1].scrollIntoView()")
        time.sleep(3)
        bins = json.loads(browser.js(
            "JSON.stringify([...document.querySelectorAll('.js-plotly-plot')[1].querySelectorAll('.point path')]"
            ".map(e => { const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2, "
            "r.height]; }))"))
        x, y, _ = max(bins, key=lambda b: b[2])
        browser.click_at(x, y)
        assert browser.wait_text("sepl mIoU in [", timeout=90), browser.text()[-2000:]
        time.sleep(4)
        _shot(browser, artifacts, "sepl_panel_histogram_click.png")
        browser.js("(() => { const t = [...document.querySelectorAll('table')].pop(); if (t) t.scrollIntoView(); })()")
        time.sleep(2)
        _shot(browser, artifacts, "sepl_panel_decisions.png")
        assert "CAM fallback (% fg)" in browser.text()
    finally:
        if browser is not None:
            browser.close()
        demo.stop()
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
