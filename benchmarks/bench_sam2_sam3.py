"""Images/s of SAM 2 / SAM-HQ automatic masks and SAM 3 pseudo-labels beside SAM 1's automatic
masks, in one process, at the released input sizes, random weights (fp32 and bf16).

    python benchmarks/bench_sam2_sam3.py --device cuda              # released structures, 1024 / 1008 px
    python benchmarks/bench_sam2_sam3.py --tiny --images 2          # CPU smoke run (tiny configs)

Released structures, random weights: SAM 1 ViT-B (``sepl.masks.build``), SAM 2.1 Hiera-T
(``Sam2Config()``'s defaults), SAM-HQ ViT-B (``SamHQConfig()``'s defaults), SAM 3
(``Sam3Config()``'s defaults, 1008 px, 200 queries; a byte-level tokenizer written offline).
Random weights make the cost real and the masks noise, so the automatic-mask filters are
relaxed (all kept before NMS) the same way for every model. Prints the CPU flags, the GPU
and each model's images/s and its ratio to SAM 1 in this run.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def _cpu_flags() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return " ".join(sorted(f for f in flags if f.startswith(("avx", "amx", "sse4"))))
    except OSError:
        pass
    return platform.processor()


def _sync(torch, dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _timed(torch, dev, fn, n):
    fn()  # warm-up
    _sync(torch, dev)
    t = time.perf_counter()
    fn()
    _sync(torch, dev)
    return n / (time.perf_counter() - t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--tiny", action="store_true", help="tiny configurations (CPU smoke run)")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    args = ap.parse_args(argv)

    import torch
    import transformers as tf

    from sepl.classes import VOC_CLASSES
    from sepl.masks import hf_models
    from sepl.masks.build import build_sam
    from sepl.masks.runtime import resolve_device
    from sepl.masks.sam2_auto import HFSamAutoMasks
    from sepl.masks.sam_auto import SamAutoMasks
    from sepl.sam3.pipeline import Sam3PseudoLabels
    from sepl.synth import make_scene

    torch.set_grad_enabled(False)
    dev = resolve_device(args.device)
    rng = np.random.default_rng(0)
    ims = [make_scene(rng, (375, 500))[0] for _ in range(args.images)]
    tags = [["person", "dog"]] * len(ims)
    relaxed = dict(points_per_side=args.points_per_side, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    gpu = torch.cuda.get_device_name(0) if dev.type == "cuda" else "none"
    print(f"device {dev} ({gpu}); CPU flags: {_cpu_flags()}; torch {torch.__version__}, transformers {tf.__version__}")
    print(f"{len(ims)} images 500x375; automatic masks: {relaxed}; SAM 3 tags {tags[0]} (VOC preset)")

    if args.tiny:
        sam1 = build_sam("tiny", device=str(dev))
        sam2, p2 = hf_models.build_tiny("sam2")
        hq, phq = hf_models.build_tiny("samhq")
        s3, p3 = hf_models.build_tiny("sam3")
    else:
        sam1 = build_sam("vit_b", device=str(dev))
        sam2, p2 = tf.Sam2Model(tf.Sam2Config()).eval(), tf.Sam2Processor(tf.Sam2ImageProcessor())
        hq, phq = tf.SamHQModel(tf.SamHQConfig()).eval(), tf.SamHQProcessor(tf.SamImageProcessor())
        tok = hf_models.tiny_clip_tokenizer()
        cfg = tf.Sam3Config()
        s3 = tf.Sam3Model(cfg).eval()  # the released text encoder has 49408 ids; ours uses fewer
        p3 = tf.Sam3Processor(tf.Sam3ImageProcessor(), tok)
    for m in (sam2, hq, s3):
        m.to(dev)

    rows = []
    for dtype in [d for d in args.dtypes.split(",") if d]:
        dt = None if dtype == "float32" else dtype
        if dt and dev.type == "cpu":
            continue  # bf16 autocast on CPU is not what anyone deploys
        srcs = {
            "SAM 1 ViT-B (sam_auto)": SamAutoMasks(sam1, image_batch=4, dtype=dt, **relaxed),
            "SAM 2.1 Hiera-T (sam2_auto)": HFSamAutoMasks(sam2, p2, "sam2", image_batch=4, dtype=dt, **relaxed),
            "SAM-HQ ViT-B (samhq_auto)": HFSamAutoMasks(hq, phq, "samhq", image_batch=4, dtype=dt, **relaxed),
        }
        base = None
        for name, src in srcs.items():
            ips = _timed(torch, dev, lambda: src.generate_batch(ims), len(ims))
            base = base or ips
            rows.append((name, dtype, ips, ips / base))
        pipe = Sam3PseudoLabels(s3, p3, VOC_CLASSES, score_threshold=0.5, dtype=dt)
        ips = _timed(torch, dev, lambda: pipe.predict_batch(ims, tags), len(ims))
        rows.append(("SAM 3 pseudo-labels, 2 tags (sam3)", dtype, ips, ips / base))
    for name, dtype, ips, ratio in rows:
        name = "[tiny config] " + name.split(" (")[-1].rstrip(")") if args.tiny else name
        print(f"{name:32s} {dtype:9s} {ips:9.3f} images/s  ({ratio:5.2f}x SAM 1 at this dtype)")


if __name__ == "__main__":
    main()
