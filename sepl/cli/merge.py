"""``sepl merge``: SEPL on folders: CAM seed PNGs + segment-anything amg.py masks -> label PNGs."""

from __future__ import annotations

from ._common import add_command

EXAMPLES = """\
  # amg.py --output sam_masks/ wrote sam_masks/<id>/{0.png,1.png,...,metadata.csv}
  sepl merge --seeds pseudo/transcam --masks sam_masks --out out/sepl
  sepl merge --seeds seeds --masks sam_rle --out out/official --mode official   # <id>.json (coco_rle)
  sepl merge --seeds seeds --masks sam_masks --out out --list train.txt --keep-ignore --records
  sepl eval --pred out/sepl --gt VOC2012/SegmentationClass --list train.txt
"""


def register(subparsers):
    p = add_command(
        subparsers, "merge",
        help="merge CAM seed label maps with SAM masks (SEPL) on folders",
        description="For every seed <id>.png in --seeds, read the image's class-agnostic masks from "
                    "--masks (segment-anything amg.py output: a folder <id>/ of 0/255 PNGs with "
                    "metadata.csv, or <id>.json with COCO RLE masks), merge them (see "
                    "sepl.merge.merge) and write <id>.png with the VOC palette to --out. Finished "
                    "outputs are skipped unless --overwrite, so an interrupted run resumes; images "
                    "that fail are listed at the end and the others are written.",
        examples=EXAMPLES,
    )
    p.add_argument("--seeds", required=True, help="folder of seed label maps <id>.png (0 bg, 1..C-1, 255)")
    p.add_argument("--masks", required=True, help="folder of amg.py outputs: <id>/ folders or <id>.json files")
    p.add_argument("--out", required=True, help="folder for the merged label maps")
    p.add_argument("--list", default=None, help="file of ids, one a line (default: every PNG in --seeds)")
    p.add_argument("--mode", choices=["paper", "official"], default="paper",
                   help="paper: assignment then selection; official: the released code exactly")
    p.add_argument("--num-classes", type=int, default=21, help="classes including background")
    p.add_argument("--ignore-index", type=int, default=255, help="the seeds' unknown value")
    p.add_argument("--keep-ignore", action="store_true", help="keep the ignore value where no selected mask lies")
    p.add_argument("--os-thresh", type=float, default=0.5, help="select a mask if |M&P|/|M| exceeds this")
    p.add_argument("--op-thresh", type=float, default=0.85, help="select a mask if |M&P|/|P| reaches this")
    p.add_argument("--fallback", choices=["unmasked", "unselected"], default="unmasked",
                   help="paper mode: keep the seed label where no mask / no selected mask lies")
    p.add_argument("--allow-empty", action="store_true",
                   help="an image with no masks keeps its seed (default: it is reported as a failure)")
    p.add_argument("--records", action="store_true",
                   help="also write <out>/records/<id>.csv: each mask's class, o_s, o_p, selected, reason")
    p.add_argument("--overwrite", action="store_true", help="recompute outputs that already exist")
    p.add_argument("--workers", type=int, default=None, help="threads (default: up to 4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def merge_folders(seeds_dir, masks_dir, out_dir, ids=None, overwrite: bool = False, records: bool = False,
                  workers=None, progress: bool = True, **merge_kwargs):
    """Merge every seed in ``seeds_dir`` with its masks under ``masks_dir`` into ``out_dir``.

    Returns (written ids, skipped ids, [(id, error)]). ``merge_kwargs`` go to ``sepl.merge.merge``.
    """
    from pathlib import Path

    from ..amgio import find_masks, read_masks
    from ..errors import SeplError
    from ..labelio import list_ids, read_label, write_label
    from ..merge import merge
    from ._folders import default_workers, run_per_image

    seeds_dir, masks_dir, out_dir = Path(seeds_dir), Path(masks_dir), Path(out_dir)
    for d, what in ((seeds_dir, "--seeds"), (masks_dir, "--masks")):
        if not d.is_dir():
            raise SeplError(f"{what} folder not found: {d}")
    if ids is None:
        ids = list_ids(seeds_dir)
    if not ids:
        raise SeplError(f"no seeds found in {seeds_dir}", hint="seeds are <id>.png label maps")
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [i for i in ids if overwrite or not (out_dir / f"{i}.png").exists()]
    skipped = [i for i in ids if i not in set(todo)]

    def one(i: str):
        seed = read_label(seeds_dir / f"{i}.png")
        where = find_masks(masks_dir, i)
        if where is None:
            raise SeplError(f"no masks for this image in {masks_dir}",
                            hint=f"expected {masks_dir / i}/ (amg.py PNGs) or {masks_dir / i}.json")
        masks, _ = read_masks(where, shape=seed.shape)
        if masks.shape[0] == 0 and masks.ndim == 3:
            masks = masks.reshape(0, *seed.shape)
        res = merge(seed, masks, name=i, **merge_kwargs)
        if records:
            _write_records(out_dir / "records" / f"{i}.csv", res.records)
        write_label(out_dir / f"{i}.png", res.labels)  # written last: its presence means "done"
        return res.num_selected

    results, failures = run_per_image(todo, one, workers or default_workers(), "merge", progress)
    written = [i for i in todo if i in results]
    return written, skipped, failures


def _write_records(path, records) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(records)
    n = len(records[keys[0]])
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["mask"] + keys)
        for k in range(n):
            row = []
            for key in keys:
                v = records[key][k]
                row.append(f"{float(v):.6g}" if key in ("o_s", "o_p") else v if isinstance(v, str) else int(v))
            w.writerow([k] + row)
    tmp.replace(path)


def run(args) -> int:
    from ..labelio import list_ids
    from ._folders import print_failures

    ids = list_ids(args.seeds, args.list) if args.list else None
    written, skipped, failures = merge_folders(
        args.seeds, args.masks, args.out, ids, overwrite=args.overwrite, records=args.records,
        workers=args.workers, progress=not args.no_progress,
        mode=args.mode, num_classes=args.num_classes, ignore_index=args.ignore_index,
        keep_ignore=args.keep_ignore, os_thresh=args.os_thresh, op_thresh=args.op_thresh,
        fallback=args.fallback, allow_empty=args.allow_empty)
    print(f"merged {len(written)} image(s) into {args.out} ({args.mode} mode); "
          f"{len(skipped)} already done (use --overwrite to redo); {len(failures)} failed")
    print_failures(failures, "not written; fix them and rerun: finished images are skipped")
    return 1 if failures else 0
