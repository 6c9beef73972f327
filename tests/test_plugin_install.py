"""The plugin installed the FiftyOne way: a downloaded copy of the repository in a plugins
folder, its requirements file, one version, and every operator registering with or
without the library."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def test_one_version():
    import sepl

    pyproject = re.search(r'(?m)^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    manifest = yaml.safe_load((REPO / "fiftyone.yml").read_text())
    assert manifest["version"] == pyproject == sepl.__version__


def test_manifest_metadata_and_names():
    manifest = yaml.safe_load((REPO / "fiftyone.yml").read_text())
    assert manifest["license"] and manifest["author"] and len(manifest["tags"]) >= 3
    listed = set(manifest["operators"]) | set(manifest["panels"])
    # every module the plugin registers is named in fiftyone.yml (else FiftyOne drops it silently)
    import ast

    defined = set()
    for path in (REPO / "plugin").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("OperatorConfig", "PanelConfig", "EvaluationMetricConfig"):
                for kw in node.keywords:
                    if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                        defined.add(kw.value.value)
    assert defined == listed


def test_requirements_match_the_library():
    reqs = [line.split(">=")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    deps = re.search(r"dependencies = \[(.*?)\]", (REPO / "pyproject.toml").read_text(), re.S).group(1)
    core = [d.split(">=")[0] for d in re.findall(r'"([^"]+)"', deps) if not d.startswith("fiftyone")]
    assert sorted(reqs) == sorted(core)


def _downloaded_copy(tmp_path, with_library: bool) -> Path:
    """What ``fiftyone plugins download <repo url>`` leaves: the repository's files in a
    folder of the plugins dir (here without git, tests or benchmarks)."""
    plugins = tmp_path / "plugins"
    dst = plugins / "sepl"
    ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "tests", "benchmarks")
    shutil.copytree(REPO, dst, ignore=ignore)
    if not with_library:
        shutil.rmtree(dst / "sepl")
    return plugins


# run in a fresh interpreter in which no sepl is importable: the editable install's finder is
# dropped, PYTHONPATH is unset and the working directory is elsewhere
_PROBE = textwrap.dedent("""
    import importlib.util, json, sys
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")
                        and "editable" not in getattr(f, "__name__", "")]
    assert importlib.util.find_spec("sepl") is None, importlib.util.find_spec("sepl")
    import fiftyone as fo
    import fiftyone.operators as foo
    import fiftyone.plugins as fop
    from fiftyone.operators.registry import OperatorRegistry
    from fiftyone.operators.executor import ExecutionContext
    names = sorted(o.config.name for o in foo.list_operators() if o.plugin_name == "@sepl/sepl")
    out = dict(names=names, errors=[str(e) for e in OperatorRegistry().list_errors()],
               requirements=[str(r) for r in fop.load_plugin_requirements("@sepl/sepl") or []])
    spec = importlib.util.find_spec("sepl")
    out["sepl"] = spec.origin if spec else None
    ds = fo.Dataset()
    try:
        ds.add_sample(fo.Sample(filepath="/tmp/none.jpg"))
        form = foo.get_operator("@sepl/sepl/refine_with_sepl").resolve_input(
            ExecutionContext(request_params=dict(dataset_name=ds.name, params={})))
        out["form"] = sorted(form.type.properties)
        try:
            foo.execute_operator("@sepl/sepl/evaluate_segmentation", ctx=dict(dataset=ds, params={}))
            out["run"] = "ran"
        except Exception as e:
            out["run"] = str(e)
    finally:
        ds.delete()
    print("PROBE " + json.dumps(out))
""")


def _probe(plugins: Path, tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["FIFTYONE_PLUGINS_DIR"] = str(plugins)
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")]
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    return json.loads(line[-1][len("PROBE "):])


@pytest.mark.slow
def test_downloaded_plugin_without_the_library_registers_all_and_says_what_to_install(tmp_path):
    listed = yaml.safe_load((REPO / "fiftyone.yml").read_text())
    out = _probe(_downloaded_copy(tmp_path, with_library=False), tmp_path)
    assert out["sepl"] is None
    assert out["names"] == sorted(listed["operators"] + listed["panels"]) and not out["errors"]
    assert "missing_library" in out["form"]
    assert "fiftyone plugins requirements @sepl/sepl --install" in out["run"]
    assert "opencv-python-headless>=4.8" in out["requirements"]


@pytest.mark.slow
def test_downloaded_plugin_uses_the_library_it_carries(tmp_path):
    listed = yaml.safe_load((REPO / "fiftyone.yml").read_text())
    plugins = _downloaded_copy(tmp_path, with_library=True)
    out = _probe(plugins, tmp_path)
    assert out["sepl"] == str(plugins / "sepl" / "sepl" / "__init__.py")
    assert out["names"] == sorted(listed["operators"] + listed["panels"]) and not out["errors"]
    assert "missing_library" not in out["form"]
    # the library runs: the form's missing values are reported, not an import problem
    assert "form has no value for" in out["run"]


def test_ensure_plugin_links_the_repository_once(tmp_path, monkeypatch):
    import fiftyone as fo

    from sepl.fo.app import ensure_plugin, find_plugin_dir

    monkeypatch.delenv("FIFTYONE_PLUGINS_DIR", raising=False)
    monkeypatch.setattr(fo.config, "plugins_dir", str(tmp_path / "plugins"))
    other = tmp_path / "plugins" / "sepl"  # someone else's folder of that name is never replaced
    other.mkdir(parents=True)
    (other / "fiftyone.yml").write_text("name: '@someone/else'\n")
    folder = ensure_plugin()
    assert folder == str(tmp_path / "plugins") and os.environ["FIFTYONE_PLUGINS_DIR"] == folder
    link = tmp_path / "plugins" / "sepl-2"
    assert link.is_symlink() and link.resolve() == REPO and (other / "fiftyone.yml").exists()
    assert find_plugin_dir(folder) == link
    ensure_plugin()  # found: nothing new
    assert sorted(p.name for p in (tmp_path / "plugins").iterdir()) == ["sepl", "sepl-2"]


def test_ensure_plugin_keeps_a_downloaded_copy(tmp_path, monkeypatch):
    import fiftyone as fo

    from sepl.fo.app import ensure_plugin

    monkeypatch.delenv("FIFTYONE_PLUGINS_DIR", raising=False)
    monkeypatch.setattr(fo.config, "plugins_dir", fo.config.plugins_dir)  # restored afterwards
    plugins = _downloaded_copy(tmp_path, with_library=False)
    assert ensure_plugin(str(plugins)) == str(plugins)
    assert [p.name for p in plugins.iterdir()] == ["sepl"] and not (plugins / "sepl").is_symlink()


def test_sepl_app_refuses_an_unknown_dataset(capsys):
    from sepl.cli import main

    assert main(["app", "--dataset", "no-such-dataset-xyz"]) == 1
    assert "no FiftyOne dataset 'no-such-dataset-xyz'" in capsys.readouterr().err
