"""Sharded mask generation over two `fiftyone delegated launch` workers sharing one MongoDB.

Starts a real mongod on a loopback port with a temporary data folder; everything that talks
to it runs in child processes (this process stays on its own database). Stops what it started.
"""

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NUM_IMAGES = 12


def _mongod() -> Path:
    import fiftyone

    path = Path(fiftyone.__file__).parent / "db" / "bin" / "mongod"
    if not path.is_file():
        pytest.skip("no mongod binary in fiftyone/db/bin")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_py(code: str, env, timeout=180) -> str:
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_two_workers_share_a_sharded_mask_run(tmp_path):
    pytest.importorskip("segment_anything")
    port = _free_port()
    dbdir = tmp_path / "db"
    dbdir.mkdir()
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "sepl").symlink_to(REPO, target_is_directory=True)
    env = dict(os.environ, FIFTYONE_DATABASE_URI=f"mongodb://127.0.0.1:{port}", FIFTYONE_PLUGINS_DIR=str(plugins),
               FIFTYONE_DO_NOT_TRACK="true", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1",
               FIFTYONE_DATABASE_VALIDATION="false")
    procs = []
    mongod = subprocess.Popen([str(_mongod()), "--dbpath", str(dbdir), "--port", str(port), "--bind_ip", "127.0.0.1",
                               "--nounixsocket"], stdout=open(tmp_path / "mongod.log", "w"), stderr=subprocess.STDOUT)
    procs.append(mongod)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("mongod did not start: " + (tmp_path / "mongod.log").read_text()[-2000:])
        name = "sepl_workers_test"
        _run_py(f"""
            import numpy as np, fiftyone as fo
            from sepl.synth import write_voc_layout
            root = write_voc_layout({str(tmp_path / 'voc')!r}, num_images={NUM_IMAGES}, seed=0)
            ds = fo.Dataset({name!r}, persistent=True)
            ds.add_samples([fo.Sample(filepath=str(p)) for p in sorted((root / 'JPEGImages').glob('*.jpg'))])
            """, env)
        fiftyone_cli = Path(sys.executable).parent / "fiftyone"
        logs = [tmp_path / f"worker{i}.log" for i in range(2)]
        for log in logs:
            procs.append(subprocess.Popen([str(fiftyone_cli), "delegated", "launch"], env=env, cwd=REPO,
                                          stdout=open(log, "w"), stderr=subprocess.STDOUT))
        deadline = time.time() + 120
        while not all("service running" in log.read_text() for log in logs):
            assert time.time() < deadline, "workers did not start: " + logs[0].read_text()[-2000:]
            assert all(p.poll() is None for p in procs), "a worker exited: " + logs[0].read_text()[-2000:]
            time.sleep(0.5)
        # queue: the operator itself (immediate) splits the run into two delegated shards
        out = _run_py(f"""
            import fiftyone as fo, fiftyone.operators as foo
            ds = fo.load_dataset({name!r})
            res = foo.execute_operator("@sepl/sepl/generate_masks", ctx=dict(dataset=ds, params=dict(
                source="sam_auto", model_type="tiny", random_weights=True, out_field="masks", num_shards=2, target="DATASET",
                points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)))
            res.raise_exceptions()
            print("QUEUED", len(res.result["queued"]))
            """, env)
        assert "QUEUED 2" in out
        check = f"""
            import json, fiftyone as fo
            from fiftyone.operators.delegated import DelegatedOperationService
            ds = fo.load_dataset({name!r})
            ops = DelegatedOperationService().list_operations(dataset_name={name!r})
            print(json.dumps(dict(states=[str(o.run_state) for o in ops],
                                  processed=[(o.result.result or {{}}).get("processed") if o.result else None for o in ops],
                                  errors=[o.result.error if o.result else None for o in ops],
                                  ids=[str(o.id) for o in ops], count=ds.count("masks"),
                                  dets=[len(s.masks.detections) if s.masks else None for s in ds])))
            """
        import json

        deadline = time.time() + 240
        while True:
            state = json.loads(_run_py(check, env).strip().splitlines()[-1])
            if all(s.endswith("completed") or s.endswith("failed") for s in state["states"]):
                break
            assert time.time() < deadline, f"shards did not finish: {state}"
            time.sleep(2)
        assert all(s.endswith("completed") for s in state["states"]), "\n".join(e or "" for e in state["errors"])
        # every sample has masks, and the two shards together processed each exactly once
        assert state["count"] == NUM_IMAGES and all(n and n > 0 for n in state["dets"])
        assert sorted(state["processed"]) == [NUM_IMAGES // 2, NUM_IMAGES // 2]
        ran = [sum(op in log.read_text() for op in state["ids"]) for log in logs]
        assert ran == [1, 1], ran  # one shard per worker
        # a rerun of a shard skips what is done
        again = _run_py(f"""
            import fiftyone as fo
            from sepl.fo.masks import generate_masks
            ds = fo.load_dataset({name!r})
            print(generate_masks(ds, "masks", source="sam_auto", model_type="tiny", random_weights=True, shard=(0, 2), params=dict(
                points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)))
            """, env)
        assert "'processed': 0" in again and f"'skipped': {NUM_IMAGES // 2}" in again
    finally:
        for p in reversed(procs):
            _stop(p)
