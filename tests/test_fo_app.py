"""The real FiftyOne App in headless Chromium: the operator browser lists the plugin's operators
and "Refine with SEPL" runs from it and writes its field. Skipped where chromium is absent.

Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``:
NUL-terminated JSON on fds 3/4), so no extra Python package is needed. A screenshot is left
in ``$SEPL_ARTIFACTS`` (default: the test's tmp dir), never in the repository.
"""

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from sepl.synth import SYNTH_CLASSES

from test_fo_pipeline import make_inputs  # tests/ is on sys.path (no package)

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
        os.dup2(self._to_r, 3)
        os.dup2(self._from_w, 4)

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


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_operator_browser_lists_and_runs_refine(synth_voc, tmp_path, rng, monkeypatch):
    import fiftyone as fo

    from sepl.fo import importers

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "sepl").symlink_to(REPO, target_is_directory=True)
    monkeypatch.setenv("FIFTYONE_PLUGINS_DIR", str(plugins))
    monkeypatch.setattr(fo.config, "plugins_dir", str(plugins))
    # the App's server is another process: it must import this checkout's sepl
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    artifacts = Path(os.environ.get("SEPL_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)

    seeds, masks = make_inputs(synth_voc, tmp_path / "inputs", rng)
    name = f"sepl-app-test-{os.getpid()}"
    ds = fo.Dataset(name)  # the App's server process loads it by name
    session = browser = None
    try:
        importers.import_voc(synth_voc, dataset=ds, classes=SYNTH_CLASSES)
        importers.import_seeds(ds, seeds, "seeds", progress=lambda f, label: None)
        importers.import_masks(ds, masks, "sam", progress=lambda f, label: None)
        port = _free_port()
        session = fo.launch_app(ds, remote=True, address="127.0.0.1", port=port, auto=False)
        browser = Browser()
        browser.call("Page.navigate", session=True, url=f"http://127.0.0.1:{port}/datasets/{name}")
        assert browser.wait_text(f"{len(ds)} samples", timeout=120), "the App did not show the dataset"
        time.sleep(2)
        browser.js("document.body.focus()")
        browser.key("`", "Backquote", text="`", key_code=192)
        assert browser.wait_text("Refine with SEPL", timeout=30), browser.text()[:2000]
        listing = browser.text()
        browser.screenshot(artifacts / "sepl_operator_browser.png")
        assert "Evaluate segmentation" in listing and "Show worst samples" in listing
        # pick "Refine with SEPL": filter the list, open its form (defaults fill it), execute
        browser.type("Refine with SEPL")
        time.sleep(1)
        browser.key("Enter", "Enter", text="\r", key_code=13)
        assert browser.wait_text("Seed field", timeout=30), browser.text()[:2000]
        time.sleep(2)
        browser.screenshot(artifacts / "sepl_refine_form.png")
        clicked = browser.js(
            "(() => { const b = [...document.querySelectorAll('button')].find("
            "x => x.innerText.trim() === 'Execute'); if (b) { b.click(); return true; } return false; })()")
        assert clicked, "no Execute button in the form"
        end = time.time() + 120
        while time.time() < end:
            ds.reload()
            if ds.has_field("sepl") and len(ds.exists("sepl")) == len(ds):
                break
            time.sleep(1)
        browser.screenshot(artifacts / "sepl_after_refine.png")
        assert ds.has_field("sepl") and len(ds.exists("sepl")) == len(ds), \
            f"Refine did not write its field; the page says: {browser.text()[-1500:]}"
        assert ds.get_run_info("sepl_sepl").config.serialize()["seed_field"] == "seeds"
    finally:
        if browser is not None:
            browser.close()
        if session is not None:
            session.close()
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
