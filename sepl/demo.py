"""``sepl demo``: the whole pipeline end to end on generated scenes, offline, in minutes.

Steps (each one reused on a rerun when its inputs have not changed):

1. scenes: ``sepl.synth.write_voc_layout`` writes generated images with exact ground truth
   in the PASCAL VOC layout; they are imported into a persistent FiftyOne dataset
   (``ground_truth`` Segmentation, ``image_labels`` Classifications) exactly as real VOC is;
2. seeds: by default from a real CAM network (``sepl.fo.cam``: the CPU-tiny HFPL net trained
   on the scenes' image-level labels only, then seeds for the same images: the WSSS
   setting); or simulated CAM seeds (``sepl.seedsim``, documented degradations of the
   ground truth; not a network), written as PNGs like an external WSSS method's and imported;
3. masks: class-agnostic SAM automatic masks when a SAM checkpoint is configured, else the
   classical superpixel source (NOT SAM, and the demo says so);
4. SEPL: the merge of seeds and masks (``sepl.fo.refine``);
5. evaluation of seeds and SEPL labels against the ground truth (``sepl.fo.evaluate``),
   a before/after table, an overlay picture and a per-class IoU plot in the output folder;
6. the App on the samples SEPL labels worst (the caller decides whether to open it).

Everything here is glue: the algorithms live in ``sepl.*``, the FiftyOne work in ``sepl.fo``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import SeplError
from .synth import SYNTH_CLASSES

DEMO_NAME = "sepl-demo"
GT, LABELS, SEEDS, MASKS, SEPL = "ground_truth", "image_labels", "seeds", "masks", "sepl"
WORST_VIEW = "worst-samples"
CAM_DIR = "cam_model"  # under the data dir: the CAM network's checkpoint, reused by reruns
SEED_SOURCES = ("cam", "simulated")
MASK_SOURCES = ("auto", "sam", "superpixels")


@dataclass
class DemoConfig:
    """What the demo builds. The defaults fit in a few minutes on two CPU cores."""

    name: str = DEMO_NAME
    num_images: int = 100
    size: Tuple[int, int] = (160, 200)
    scene_seed: int = 0
    seeds: str = "cam"
    seed_preset: str = "cam"
    # the CAM network (``--seeds cam``): sepl.cam's "cpu-tiny" preset (HFPL feature similarity
    # on, importance sampling off) with crops of 128 for these 160x200 scenes
    cam_epochs: int = 40
    cam_crop: int = 128
    cam_width: int = 32
    cam_threshold: float = 0.5  # background threshold; 0.5 measured best for the tiny net
    # torch threads for the CAM network. One: on two cores that other processes also use,
    # OpenMP's two threads wait on each other at every barrier (measured on this project's
    # machine at load 3.5: 0.02-1.2 s per training step with two threads, 0.03 s with one);
    # the tiny net gains little from more, and one thread gives the same numbers everywhere.
    cam_threads: int = 1
    masks: str = "auto"
    sam_checkpoint: Optional[str] = None
    sam_model_type: Optional[str] = None
    points_per_side: int = 32
    mode: str = "paper"
    data_dir: Optional[str] = None
    output_dir: str = "sepl-demo-output"
    fresh: bool = False
    overlay_samples: int = 4

    def scene_params(self) -> Dict[str, Any]:
        return dict(num_images=self.num_images, size=list(self.size), scene_seed=self.scene_seed)


@dataclass
class DemoResult:
    """What a demo run measured and wrote."""

    dataset_name: str
    num_samples: int
    seed_source: str
    mask_source: str
    classes: List[str]
    seed_iou: List[float]
    sepl_iou: List[float]
    seed_miou: float
    sepl_miou: float
    improved: int = 0
    worsened: int = 0
    files: Dict[str, str] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)

    def table(self) -> str:
        """The before/after table (IoU in %) as printed."""
        rows = [f"{'class':<12}{'seeds':>8}{'SEPL':>8}{'change':>9}", "-" * 37]
        for c, a, b in zip(self.classes, self.seed_iou, self.sepl_iou):
            rows.append(f"{c:<12}{_pct(a):>8}{_pct(b):>8}{_delta(a, b):>9}")
        rows.append("-" * 37)
        rows.append(f"{'mIoU':<12}{_pct(self.seed_miou):>8}{_pct(self.sepl_miou):>8}"
                    f"{_delta(self.seed_miou, self.sepl_miou):>9}")
        return "\n".join(rows)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _pct(v: float) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


def _delta(a: float, b: float) -> str:
    if a is None or b is None or not (np.isfinite(a) and np.isfinite(b)):
        return "-"
    return f"{100 * (b - a):+.1f}"


Say = Callable[[str], None]


# -- step 1: scenes and the dataset --------------------------------------------------------

def default_data_dir(name: str = DEMO_NAME) -> Path:
    """Where the demo keeps its generated files: ``<fiftyone dataset dir>/<name>``."""
    import fiftyone as fo

    return Path(fo.config.default_dataset_dir) / name


def write_scenes(cfg: DemoConfig, data_dir: Path, say: Say = print) -> Tuple[Path, bool]:
    """The VOC-layout scenes under ``data_dir/scenes``, written unless the same ones exist.

    Returns (root, rebuilt).
    """
    from .synth import write_voc_layout

    root = data_dir / "scenes"
    stamp = data_dir / "scenes.json"
    params = cfg.scene_params()
    if not cfg.fresh and stamp.exists() and json.loads(stamp.read_text()) == params:
        return root, False
    # only what the demo wrote is removed: --data-dir may point into a folder of the user's
    for old in [root, stamp, *data_dir.glob("seeds_*"), data_dir / CAM_DIR]:
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    data_dir.mkdir(parents=True, exist_ok=True)
    say(f"writing {cfg.num_images} generated scenes ({cfg.size[1]}x{cfg.size[0]}) to {root}")
    write_voc_layout(root, cfg.num_images, seed=cfg.scene_seed, size=tuple(cfg.size))
    stamp.write_text(json.dumps(params))
    return root, True


def _dataset_stamp(cfg: DemoConfig, root: Path) -> Dict[str, Any]:
    return dict(cfg.scene_params(), root=str(Path(root).resolve()))


def open_demo_dataset(cfg: DemoConfig, root: Path, rebuilt: bool, say: Say = print):
    """The persistent demo dataset, (re)imported from ``root`` when new or rebuilt."""
    import fiftyone as fo

    from .fo.importers import import_voc

    if fo.dataset_exists(cfg.name):
        if not rebuilt and not cfg.fresh:
            ds = fo.load_dataset(cfg.name)
            if ds.info.get("sepl_demo") == _dataset_stamp(cfg, root) and ds.has_field(GT):
                say(f"reusing dataset '{cfg.name}' ({len(ds)} samples); --fresh rebuilds it")
                return ds
        fo.delete_dataset(cfg.name)
    say(f"importing the scenes into the FiftyOne dataset '{cfg.name}'")
    ds = import_voc(str(root), name=cfg.name, gt_field=GT, labels_field=LABELS, classes=SYNTH_CLASSES)
    ds.persistent = True
    ds.info["sepl_demo"] = _dataset_stamp(cfg, root)
    ds.save()
    return ds


# -- step 2: seeds ---------------------------------------------------------------------------

def write_simulated_seeds(root: Path, out: Path, preset: str, seed: int = 0) -> Path:
    """Simulated CAM seeds for every scene of ``root``: ``out/<id>.png`` (0..C-1 PNGs).

    Reuses ``out`` when it was made with the same preset and ids.
    """
    from tqdm import tqdm

    from .labelio import read_label, write_label
    from .seedsim import PRESETS, simulate_seed

    if preset not in PRESETS:
        raise SeplError(f"unknown seed preset '{preset}'", hint=f"use one of {', '.join(PRESETS)}")
    ids = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    stamp = out / "seedsim.json"
    params = dict(preset=preset, config=PRESETS[preset].to_dict(), seed=seed, ids=len(ids))
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for sid in tqdm(ids, desc="simulated CAM seeds", unit="img"):
        gt = read_label(root / "SegmentationClass" / f"{sid}.png")
        write_label(out / f"{sid}.png", simulate_seed(gt, len(SYNTH_CLASSES), rng, PRESETS[preset]), palette=True)
    stamp.write_text(json.dumps(params))
    return out


def cam_params(cfg: DemoConfig) -> Dict[str, Any]:
    """The CAM network's training settings (``sepl.cam.train.TrainConfig`` overrides)."""
    return dict(epochs=cfg.cam_epochs, crop_size=cfg.cam_crop, width=cfg.cam_width, seed=cfg.scene_seed)


def train_demo_cam(ds, cfg: DemoConfig, data_dir: Path, say: Say = print):
    """The CPU-tiny CAM network trained on ``image_labels`` of every demo scene.

    The checkpoint lives in ``data_dir/cam_model``: a rerun with the same settings reuses it
    (a finished training is only loaded, an interrupted one resumes); other settings or
    ``--fresh`` retrain from scratch. Returns (model, whether it was (re)trained now).
    """
    from .fo.cam import train_cam

    out = data_dir / CAM_DIR
    stamp = out / "demo.json"
    params = dict(cam_params(cfg), preset="cpu-tiny", scenes=cfg.scene_params())
    same = stamp.exists() and json.loads(stamp.read_text()) == params
    ckpt = out / "checkpoint.pth"
    if (cfg.fresh or not same) and out.exists():
        shutil.rmtree(out)
    done = same and ckpt.exists() and _checkpoint_epochs(ckpt) >= cfg.cam_epochs
    if done:
        say(f"reusing the trained CAM network {ckpt}; --fresh retrains it")
    else:
        say(f"training the CAM network (cpu-tiny, {cfg.cam_epochs} epochs, crops of {cfg.cam_crop}) "
            f"on the image-level labels of {len(ds)} scenes")
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(params))
    model = train_cam(ds, LABELS, output_dir=out, classes=SYNTH_CLASSES, config="cpu-tiny", resume=True,
                      **cam_params(cfg))
    return model, not done


@contextlib.contextmanager
def torch_threads(n: Optional[int]):
    """torch's intra-op thread count set to ``n`` (None: unchanged) inside the block."""
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _checkpoint_epochs(path: Path) -> int:
    from .cam.train import load_checkpoint

    return int(load_checkpoint(path).get("epoch", -1)) + 1


def make_seeds(ds, cfg: DemoConfig, root: Path, data_dir: Path, say: Say = print) -> Tuple[str, bool]:
    """Fill ``seeds``. Returns (where they came from, whether earlier seeds were replaced)."""
    if cfg.seeds not in SEED_SOURCES:
        raise SeplError(f"unknown seed source '{cfg.seeds}'", hint=f"use one of {', '.join(SEED_SOURCES)}")
    if cfg.seeds == "cam":
        from .fo.cam import generate_seeds

        with torch_threads(cfg.cam_threads):
            model, retrained = train_demo_cam(ds, cfg, data_dir, say)
            # a retrained network keeps its checkpoint path: seeds of the old one must not be resumed
            stale = retrained and ds.has_field(SEEDS)
            _, replaced = _resumable(lambda overwrite: generate_seeds(
                ds, model, SEEDS, labels_field=LABELS, threshold=cfg.cam_threshold, overwrite=overwrite or stale),
                SEEDS, say)
        replaced = replaced or stale
        return (f"CAM network (sepl.cam 'cpu-tiny': tiny CNN from random weights + HFPL feature "
                f"similarity, {cfg.cam_epochs} epochs on the image-level labels only; background "
                f"threshold {cfg.cam_threshold})"), replaced
    from .fo.importers import import_seeds

    folder = write_simulated_seeds(root, data_dir / f"seeds_{cfg.seed_preset}", cfg.seed_preset, cfg.scene_seed)
    _, replaced = _resumable(lambda overwrite: import_seeds(ds, str(folder), field=SEEDS, classes=SYNTH_CLASSES,
                                                            overwrite=overwrite), SEEDS, say)
    return f"simulated CAM seeds (sepl.seedsim preset '{cfg.seed_preset}'; NOT a network)", replaced


# -- step 3: class-agnostic masks ------------------------------------------------------------

# The superpixel source's own defaults (one Felzenszwalb partition at scale 100). Measured on
# the demo's 100 scenes ("cam" seeds at 69.1 mIoU, paper merge): scale 100 -> 83.7,
# scales 50/100/200 -> 82.7, 100/200/400 -> 81.1. The scenes are read back from JPEG, whose
# artefacts cost superpixels a lot on small images (8 scenes of 96x120 at scales
# 100/200/400: 84.8 from the raw pixels, 68.9 from the JPEGs; 85.3 with scale 100).
SUPERPIXEL_PARAMS: Dict[str, Any] = {}


def mask_plan(cfg: DemoConfig) -> Dict[str, Any]:
    """Keyword arguments of ``sepl.fo.masks.generate_masks`` for the configured source:
    SAM automatic masks when a checkpoint is configured, else the classical source."""
    import re

    from .masks.checkpoints import ENV_CHECKPOINT

    if cfg.masks not in MASK_SOURCES:
        raise SeplError(f"unknown mask source '{cfg.masks}'", hint=f"use one of {', '.join(MASK_SOURCES)}")
    checkpoint = cfg.sam_checkpoint or os.environ.get(ENV_CHECKPOINT)
    if cfg.masks == "sam" or (cfg.masks == "auto" and checkpoint):
        if not checkpoint:
            raise SeplError("SAM masks need a checkpoint",
                            hint=f"pass --sam-checkpoint /path/to/sam_vit_h_4b8939.pth or set {ENV_CHECKPOINT}")
        found = re.search(r"vit_[hlb]", os.path.basename(checkpoint))
        model_type = cfg.sam_model_type or (found.group(0) if found else "vit_h")
        return dict(source="sam_auto", model_type=model_type, checkpoint=checkpoint,
                    params=dict(points_per_side=cfg.points_per_side))
    return dict(source="superpixels", params=dict(SUPERPIXEL_PARAMS))


def describe_masks(plan: Dict[str, Any]) -> str:
    if plan["source"] == "superpixels":
        from .masks.checkpoints import ENV_CHECKPOINT

        return (f"classical superpixels (Felzenszwalb partition, sepl.masks.superpixels) -- NOT SAM: "
                f"no SAM checkpoint is configured "
                f"(set {ENV_CHECKPOINT} or pass --sam-checkpoint for SAM masks)")
    return (f"SAM {plan['model_type']} automatic masks ({plan['params']['points_per_side']}^2 points) "
            f"from {plan['checkpoint']}")


def make_masks(ds, plan: Dict[str, Any], say: Say = print) -> bool:
    """Fill ``masks`` (``fo.Detections`` with instance masks) as ``plan`` says. Returns
    whether earlier masks were replaced."""
    from .fo.masks import generate_masks

    def step(overwrite):
        with progress_bar("class-agnostic masks") as progress:
            summary = generate_masks(ds, out_field=MASKS, overwrite=overwrite, progress=progress, **plan)
            progress(1.0, f"{summary.get('processed', 0)} computed, {summary.get('skipped', 0)} reused")
        if summary.get("failed"):
            raise SeplError(f"{len(summary['failed'])} sample(s) got no masks: {summary['failed'][:3]}",
                            hint="rerun the same command to retry them")
        return summary

    return _resumable(step, MASKS, say)[1]


# -- steps 4-5: SEPL and evaluation ------------------------------------------------------------

def run_sepl(ds, cfg: DemoConfig, inputs_changed: bool = False, say: Say = print) -> None:
    """Fill ``sepl``; with ``inputs_changed`` (new seeds or masks) every sample is redone,
    since a resume would keep labels merged from the old inputs."""
    from .fo.refine import refine

    if inputs_changed and ds.has_field(SEPL):
        say(f"seeds or masks changed: recomputing '{SEPL}'")
    # SAM can find no mask at all in an image; the demo then keeps that image's seed (what
    # the merge gives for an empty set) instead of stopping the whole run
    _resumable(lambda overwrite: refine(ds, SEEDS, MASKS, out_field=SEPL, mode=cfg.mode, allow_empty=True,
                                        overwrite=overwrite or inputs_changed), SEPL, say)


def evaluate_both(ds):
    """Evaluation results of the seeds and of the SEPL labels (per-sample ``*_miou``,
    ``sepl_delta``)."""
    from .fo.evaluate import evaluate

    return evaluate(ds, [SEEDS, SEPL], gt_field=GT, overwrite=True)


@contextlib.contextmanager
def progress_bar(desc: str):
    """A ``progress(fraction, message)`` callback drawing a tqdm bar (0..100 %)."""
    from tqdm import tqdm

    bar = tqdm(total=100, desc=desc, unit="%", bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}]")

    def progress(fraction: float, message: str = "") -> None:
        bar.n = int(round(100 * fraction))
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    try:
        yield progress
    finally:
        bar.close()


def _resumable(step: Callable[[bool], Any], field_name: str, say: Say) -> Tuple[Any, bool]:
    """Run ``step(overwrite=False)``: resumes an identical earlier run; when the field was
    made with other settings, recompute it (the demo owns its dataset).

    Returns (what ``step`` returned, whether an existing field was replaced).
    """
    try:
        return step(False), False
    except SeplError as e:
        if "already exists" not in e.message:
            raise
        say(f"'{field_name}' was made with other settings: recomputing it")
        return step(True), True


def worst_view(ds):
    """The samples sorted by SEPL per-sample mIoU, worst first; saved as ``worst-samples``."""
    from .fo.views import worst_samples

    view = worst_samples(ds, SEPL)
    ds.save_view(WORST_VIEW, view, overwrite=True)
    return view


def configure_app(ds) -> None:
    """What the App shows first: the SEPL labels and the per-sample scores (not the many
    class-agnostic masks, which would cover every image), in the colours of the pictures."""
    import fiftyone as fo

    from .classes import voc_palette

    from .fo.app import write_score_labels

    palette = voc_palette(len(SYNTH_CLASSES))
    # the scores as labelled tags ("SEPL 78.1%"): three bare numbers on a tile say not what they are
    scores = write_score_labels(ds, {"seeds": (f"{SEEDS}_miou", "pct"), "SEPL": (f"{SEPL}_miou", "pct"),
                                     "change": (f"{SEPL}_delta", "delta")})
    ds.app_config.active_fields = fo.ActiveFields(paths=[SEPL, LABELS, scores])
    ds.app_config.color_scheme = fo.ColorScheme(
        color_by="value", opacity=0.6,
        default_mask_targets_colors=[{"intTarget": i, "color": "#%02x%02x%02x" % tuple(int(v) for v in palette[i])}
                                     for i in range(1, len(SYNTH_CLASSES))])
    ds.save()


def app_url(ds, port: int, address: str = "127.0.0.1") -> str:
    """The App's address of the worst-samples view."""
    import urllib.parse

    host = "localhost" if address in ("0.0.0.0", "127.0.0.1") else address
    return f"http://{host}:{port}/datasets/{urllib.parse.quote(ds.name)}?view={WORST_VIEW}"


# -- pictures ------------------------------------------------------------------------------------

def write_pictures(ds, result: DemoResult, out_dir: Path, count: int = 4) -> Dict[str, str]:
    """The per-class IoU plot and a before/after overlay of the samples SEPL changed most."""
    from . import plots

    out_dir.mkdir(parents=True, exist_ok=True)
    iou_path = out_dir / "class_iou.png"
    plots.plot_class_iou(result.sepl_iou, result.classes, baseline=result.seed_iou, labels=("SEPL", "seeds"),
                         path=str(iou_path))
    # the samples SEPL helped most, then the one it harmed most: the picture shows both sides
    scored = ds.exists(f"{SEPL}_delta")
    view = list(scored.sort_by(f"{SEPL}_delta", reverse=True).limit(max(1, count - 1)))
    view += [s for s in scored.sort_by(f"{SEPL}_delta").limit(1) if s.id not in {v.id for v in view}]
    overlay_path = out_dir / "before_after.png"
    overlay_grid(view, overlay_path)
    return {"iou_plot": str(iou_path), "overlay": str(overlay_path)}


def overlay_grid(samples: Sequence[Any], path: Path) -> Path:
    """One row per sample: the image, then seeds, SEPL and ground truth over it."""
    from .fo.convert import load_label_map
    from .labelio import read_image
    from matplotlib.figure import Figure

    from .plots import overlay

    cols = [("image", None), ("seeds (before)", SEEDS), ("SEPL (after)", SEPL), ("ground truth", GT)]
    fig = Figure(figsize=(2.1 * len(cols), 1.75 * len(samples) + 0.3), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(samples), len(cols)))
    for r, sample in enumerate(samples):
        image = read_image(sample.filepath)
        for c, (title, fld) in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(image if fld is None else overlay(image, load_label_map(sample, fld)))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
            if fld in (SEEDS, SEPL):
                score = sample[f"{fld}_miou"]
                ax.set_xlabel(f"mIoU {100 * score:.0f}" if score is not None else "", fontsize=8)
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=80, format="png")
    # a 256-colour palette keeps the noisy textures to a size worth sharing (about a third)
    Image.open(buf).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


# -- the whole run ---------------------------------------------------------------------------------

def run_demo(cfg: DemoConfig, say: Say = print) -> Tuple[Any, DemoResult]:
    """Build (or reuse) everything and measure it. Returns (dataset, result)."""
    import time

    seconds: Dict[str, float] = {}
    t0 = time.perf_counter()

    def lap(name):
        nonlocal t0
        t = time.perf_counter()
        seconds[name] = round(t - t0, 2)
        t0 = t

    data_dir = Path(cfg.data_dir) if cfg.data_dir else default_data_dir(cfg.name)
    root, rebuilt = write_scenes(cfg, data_dir, say)
    ds = open_demo_dataset(cfg, root, rebuilt, say)
    lap("scenes")
    seed_desc, seeds_changed = make_seeds(ds, cfg, root, data_dir, say)
    say(f"seeds: {seed_desc}")
    lap("seeds")
    plan = mask_plan(cfg)
    mask_desc = describe_masks(plan)
    say(f"masks: {mask_desc}")
    masks_changed = make_masks(ds, plan, say)
    lap("masks")
    run_sepl(ds, cfg, seeds_changed or masks_changed, say)
    lap("sepl")
    res_seeds, res_sepl = evaluate_both(ds)
    lap("evaluate")
    deltas = np.asarray([d for d in ds.values(f"{SEPL}_delta") if d is not None], float)
    result = DemoResult(
        dataset_name=ds.name, num_samples=len(ds), seed_source=seed_desc,
        mask_source=mask_desc,
        classes=list(res_seeds.classes),
        seed_iou=[float(v) for v in res_seeds.iou()], sepl_iou=[float(v) for v in res_sepl.iou()],
        seed_miou=res_seeds.miou(), sepl_miou=res_sepl.miou(),
        improved=int((deltas > 1e-9).sum()), worsened=int((deltas < -1e-9).sum()),
    )
    out_dir = Path(cfg.output_dir)
    result.files = write_pictures(ds, result, out_dir, cfg.overlay_samples)
    worst_view(ds)
    configure_app(ds)
    lap("pictures")
    result.seconds = seconds
    summary = out_dir / "summary.json"
    summary.write_text(json.dumps(result.to_dict(), indent=2))
    result.files["summary"] = str(summary)
    return ds, result


def report(result: DemoResult, say: Say = print) -> None:
    """Print the before/after table and where the pictures are."""
    say("")
    say(f"{result.num_samples} generated scenes; seeds: {result.seed_source}")
    say(f"masks: {result.mask_source}")
    say("")
    say(result.table())
    say("")
    say(f"SEPL improved {result.improved} samples and worsened {result.worsened} "
        f"(per-sample mIoU, of {result.num_samples})")
    for what, path in result.files.items():
        say(f"{what:<9} {path}")


def launch_app(ds, port: int = 5151, address: str = "127.0.0.1", wait: bool = True, say: Say = print):
    """Serve the App on the worst-samples view (remote mode: no browser is opened here).

    With ``wait`` the call blocks until Ctrl-C; returns the session otherwise.
    """
    from .fo.app import launch_app as launch_with_plugin

    view = ds.load_saved_view(WORST_VIEW) if ds.has_saved_view(WORST_VIEW) else worst_view(ds)
    # serves the sepl plugin too: the App server process finds it in FiftyOne's plugins dir
    session = launch_with_plugin(view, port=port, address=address, say=say)
    say(f"the App serves dataset '{ds.name}', sorted by SEPL per-sample mIoU (worst first), at\n"
        f"  {app_url(ds, port, address)}\n"
        f"(from another machine: ssh -N -L {port}:127.0.0.1:{port} this-host, then open that address)")
    if not wait:
        return session
    say("press Ctrl-C to stop")
    try:
        session.wait(-1)
    except KeyboardInterrupt:
        say("stopping the App")
    finally:
        session.close()
    return None
