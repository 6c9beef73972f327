"""Serving the FiftyOne App with the sepl plugin visible to it.

The App's server is a child process that finds plugins in ``fo.config.plugins_dir``
(``$FIFTYONE_PLUGINS_DIR``, default ``~/fiftyone/__plugins__``) when it starts. A checkout
or editable install of this repository is not in that folder, so ``fo.launch_app`` alone
serves no sepl operator. ``ensure_plugin`` makes the plugin visible the FiftyOne way: when
the plugins folder does not already hold ``@sepl/sepl``, it links this repository into it
(``<plugins dir>/sepl -> repo``), keeping every other plugin there; ``launch_app`` does
that, exports the folder for the server process, launches the App and checks, through the
server's own ``POST /operators``, which sepl operators it serves.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import List, Optional

from ..errors import SeplError

PLUGIN_NAME = "@sepl/sepl"


def repo_root() -> Optional[Path]:
    """The folder holding ``fiftyone.yml`` and ``plugin/`` beside this ``sepl`` package, or
    None (a wheel install ships the library only)."""
    root = Path(__file__).resolve().parent.parent.parent
    return root if (root / "fiftyone.yml").is_file() and (root / "plugin" / "__init__.py").is_file() else None


def find_plugin_dir(plugins_dir: str) -> Optional[Path]:
    """The folder under ``plugins_dir`` whose ``fiftyone.yml`` names ``@sepl/sepl``, or None."""
    import yaml

    base = Path(plugins_dir)
    if not base.is_dir():
        return None
    for root, dirs, files in os.walk(base, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith((".", "__pycache__", "node_modules"))]
        for name in ("fiftyone.yml", "fiftyone.yaml"):
            if name in files:
                try:
                    meta = yaml.safe_load((Path(root) / name).read_text()) or {}
                except (OSError, yaml.YAMLError):
                    continue
                if meta.get("name") == PLUGIN_NAME:
                    return Path(root)
                dirs[:] = []  # a plugin's own folders hold no other plugin
    return None


def ensure_plugin(plugins_dir: Optional[str] = None, say=None) -> str:
    """Make ``@sepl/sepl`` visible in ``plugins_dir`` (default ``fo.config.plugins_dir``)
    and point this process and the App server it starts at that folder.

    Returns the plugins folder. A plugin already there (a ``fiftyone plugins download``, or
    an earlier link) is left as it is; otherwise ``<plugins_dir>/sepl`` becomes a link to
    this repository. Raises SeplError when this ``sepl`` has no plugin beside it.
    """
    import fiftyone as fo

    plugins_dir = str(Path(plugins_dir or fo.config.plugins_dir or Path.home() / "fiftyone" / "__plugins__")
                      .expanduser())
    found = find_plugin_dir(plugins_dir)
    if found is None:
        root = repo_root()
        if root is None:
            raise SeplError(f"the plugin {PLUGIN_NAME} is not in FiftyOne's plugins folder '{plugins_dir}', and "
                            "this installation of sepl has no fiftyone.yml beside it",
                            hint="install the plugin: fiftyone plugins download https://github.com/sepl/sepl")
        Path(plugins_dir).mkdir(parents=True, exist_ok=True)
        link = Path(plugins_dir) / "sepl"
        n = 1
        while link.exists() or link.is_symlink():  # someone else's "sepl": never replace it
            n += 1
            link = Path(plugins_dir) / f"sepl-{n}"
        link.symlink_to(root, target_is_directory=True)
        if say:
            say(f"plugin {PLUGIN_NAME}: linked {link} -> {root}")
    os.environ["FIFTYONE_PLUGINS_DIR"] = plugins_dir  # the App server is a child process
    fo.config.plugins_dir = plugins_dir
    return plugins_dir


def served_operators(port: int, dataset_name: str, address: str = "127.0.0.1", timeout: float = 30) -> List[str]:
    """Names of the ``@sepl/sepl`` operators and panels the App server on ``port`` lists for
    ``dataset_name`` (its ``POST /operators``)."""
    host = "127.0.0.1" if address in ("0.0.0.0", "") else address
    req = urllib.request.Request(f"http://{host}:{port}/operators",
                                 data=json.dumps({"dataset_name": dataset_name}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        payload = json.loads(resp.read())
    return sorted(op["config"]["name"] for op in payload.get("operators", [])
                  if op.get("plugin_name") == PLUGIN_NAME)


def launch_app(view, port: int = 5151, address: str = "127.0.0.1", plugins_dir: Optional[str] = None,
               say=print, **kwargs):
    """``fo.launch_app(view, remote=True, ...)`` with the sepl plugin served.

    Returns the session. Says how many sepl operators the server lists, or warns when it
    lists none (an App server that was already running on ``port`` keeps its plugins).
    """
    import fiftyone as fo

    ensure_plugin(plugins_dir, say=say)
    session = fo.launch_app(view, remote=True, address=address, port=port, **kwargs)
    name = view._dataset.name if hasattr(view, "_dataset") else view.name
    try:
        ops = served_operators(port, name, address)
    except OSError as e:
        ops = None
        say(f"could not ask the App server for its operators: {e}")
    if ops is not None:
        if ops:
            say(f"the App serves the sepl plugin: {len(ops)} operators and panels (open the operator "
                "browser with the ` key)")
        else:
            say(f"warning: the App server on port {port} lists no sepl operator; it may have been started "
                "earlier by another process: stop it, or use another --port")
    return session


def write_score_labels(view, columns, field: str = "scores") -> str:
    """Per-sample scores as labelled tags for the App's grid: ``field`` becomes an
    ``fo.Classifications`` whose labels read e.g. "seeds 67.8%", "SEPL 52.9%",
    "change -14.9" (a bare number on a tile says not what it is).

    Args:
        columns: ``{name shown: (score field, kind)}`` with kind "pct" (a fraction shown in
            percent, one decimal) or "delta" (a difference of fractions, shown in points).
    Returns ``field``.
    """
    import fiftyone as fo

    names = list(columns)
    paths = [columns[n][0] for n in names]
    values = view.values(paths) if len(paths) > 1 else [view.values(paths[0])]
    labels = []
    for row in zip(*values):
        tags = []
        for name, v in zip(names, row):
            if v is None:
                continue
            text = f"{100 * v:+.1f}" if columns[name][1] == "delta" else f"{100 * v:.1f}%"
            tags.append(fo.Classification(label=f"{name} {text}"))
        labels.append(fo.Classifications(classifications=tags))
    view.set_values(field, labels)
    return field
