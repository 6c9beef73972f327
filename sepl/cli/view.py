"""``sepl view``: saved views of a dataset (what ``--view NAME`` in every command reads)."""

from __future__ import annotations

from ._common import add_command, load_dataset


def register(subparsers):
    p = add_command(
        subparsers, "view",
        help="save, list or delete saved views (subsets that --view NAME reads)",
        description="Save a subset of a FiftyOne dataset as a named view, so that every sepl command can "
                    "work on it with --view NAME (and the App shows it in its saved-views menu). Filters "
                    "compose: ids or file names, sample tags, fields that must exist or be missing, then a "
                    "random --take or the first --limit samples.",
        examples="  sepl view save --dataset voc-train --name first10 --limit 10\n"
                 "  sepl view save --dataset voc-train --name sample200 --take 200 --seed 1\n"
                 "  sepl view save --dataset voc-train --name todo --missing sepl\n"
                 "  sepl view save --dataset voc-train --name mine --ids ids.txt   # ids or file names, one a line\n"
                 "  sepl view list --dataset voc-train\n"
                 "  sepl view delete --dataset voc-train --name first10",
    )
    p.add_argument("action", choices=["save", "list", "delete"])
    p.add_argument("--dataset", required=True, help="name of the FiftyOne dataset")
    p.add_argument("--name", default=None, help="name of the saved view (save, delete)")
    p.add_argument("--ids", default=None, help="a file of sample ids or file names, one a line")
    p.add_argument("--tags", nargs="+", default=None, help="samples with any of these sample tags")
    p.add_argument("--exists", nargs="+", default=None, help="samples where these fields are set")
    p.add_argument("--missing", nargs="+", default=None, help="samples where these fields are not set")
    p.add_argument("--limit", type=int, default=None, help="the first N samples")
    p.add_argument("--take", type=int, default=None, help="N random samples (fixed by --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed of --take")
    p.add_argument("--overwrite", action="store_true", help="replace a saved view of that name")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from pathlib import Path

    from ..errors import SeplError
    from ..fo.views import save_view

    ds = load_dataset(args)
    if args.action == "list":
        for name in ds.list_saved_views():
            print(f"{name}: {len(ds.load_saved_view(name))} samples")
        return 0
    if not args.name:
        raise SeplError(f"'sepl view {args.action}' needs --name")
    if args.action == "delete":
        if not ds.has_saved_view(args.name):
            raise SeplError(f"dataset '{ds.name}' has no saved view '{args.name}'",
                            hint=f"saved views: {ds.list_saved_views()}")
        ds.delete_saved_view(args.name)
        print(f"deleted saved view '{args.name}' of '{ds.name}'")
        return 0
    ids = None
    if args.ids:
        path = Path(args.ids)
        if not path.is_file():
            raise SeplError(f"ids file not found: {path}")
        ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    view = save_view(ds, args.name, ids=ids, tags=args.tags, exists=args.exists, missing=args.missing,
                     limit=args.limit, take=args.take, seed=args.seed, overwrite=args.overwrite)
    print(f"saved view '{args.name}' of '{ds.name}': {len(view)} samples (use --view {args.name})")
    return 0
