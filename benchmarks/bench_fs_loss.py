"""Windowed vs all-pairs HFPL feature-similarity loss on a 56x56 logit grid (448 crop, stride 8).

Prints forward+backward time of each, the speed ratio and the difference in loss value.
    python benchmarks/bench_fs_loss.py [--batch 2] [--classes 21] [--repeats 3] [--device cpu]
"""

import argparse
import time

import torch
import torch.nn.functional as F

from sepl.cam.losses import feature_similarity_loss, feature_similarity_loss_allpairs


def _time(fn, repeats, device):
    times, value = [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        value = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return min(times), value


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--classes", type=int, default=21, help="channels of y (background + foreground)")
    ap.add_argument("--grid", type=int, default=56)
    ap.add_argument("--sigma", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    n, k, s = args.batch, args.classes, args.grid
    # a smooth image with edges and a blob-like prediction map: closer to real inputs than noise
    image = F.interpolate(torch.rand(n, 3, s // 8, s // 8, generator=g), size=(s, s), mode="nearest")
    image = (image + 0.05 * torch.rand(n, 3, s, s, generator=g)).clamp(0, 1).to(device)
    logits = F.interpolate(torch.randn(n, k, s // 8, s // 8, generator=g), size=(s, s), mode="bilinear")
    y = torch.softmax(3 * logits, 1).to(device)

    def run(fn):
        def go():
            yy = y.clone().requires_grad_(True)
            loss = fn(image, yy, sigma=args.sigma)
            loss.backward()
            return loss.item()
        return go

    run(feature_similarity_loss)()  # warm-up
    t_win, v_win = _time(run(feature_similarity_loss), args.repeats, device)
    t_all, v_all = _time(run(feature_similarity_loss_allpairs), args.repeats, device)
    print(f"grid {s}x{s}, batch {n}, {k} channels, sigma {args.sigma}, device {device}")
    print(f"all pairs  ({(s * s) ** 2:,} pairs/image): {t_all * 1000:8.1f} ms  loss {v_all:.6f}")
    r = int(torch.tensor(3 * args.sigma).ceil())
    print(f"windowed   (radius {r}):            {t_win * 1000:8.1f} ms  loss {v_win:.6f}")
    print(f"speed ratio (all pairs / windowed): {t_all / t_win:.1f}x")
    print(f"loss difference: {v_win - v_all:+.3e} ({100 * abs(v_win - v_all) / abs(v_all):.3f}% of the all-pairs value)")


if __name__ == "__main__":
    main()
