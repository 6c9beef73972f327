"""Helpers shared by the sub-command modules."""

from __future__ import annotations

import argparse

from . import HelpFormatter


def add_command(subparsers, name: str, help: str, description: str, examples: str) -> argparse.ArgumentParser:
    """Add a sub-command whose ``--help`` shows ``description`` and an Examples section."""
    return subparsers.add_parser(
        name,
        help=help,
        description=description,
        epilog="examples:\n" + examples.rstrip(),
        formatter_class=HelpFormatter,
    )


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a batch size of 0 is refused before any work starts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def writable_file(path: str, option: str) -> str:
    """Check, before any work, that ``path`` can be written: its folder is created (as
    ``--plots`` does) and must accept files; an existing directory is refused. Returns it."""
    import os

    from ..errors import SeplError

    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise SeplError(f"{option} {path}: cannot create its folder {folder}: {e.strerror or e}",
                        hint=f"choose a writable path for {option}")
    if os.path.isdir(path):
        raise SeplError(f"{option} {path} is a folder", hint=f"give {option} a file name")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise SeplError(f"{option} {path} is not writable", hint=f"choose a writable path for {option}")
    return path


def writable_dir(path: str, option: str) -> str:
    """Check, before any work, that the folder ``path`` exists or can be created and accepts
    files (nothing is created when it does not exist yet). Returns it."""
    import os

    from ..errors import SeplError

    probe = os.path.abspath(path)
    while not os.path.exists(probe):  # the nearest existing ancestor decides
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if os.path.exists(probe) and not os.path.isdir(probe):
        raise SeplError(f"{option} {path}: {probe} is a file, not a folder", hint=f"choose another {option}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SeplError(f"{option} {path} is not writable ({probe} does not accept new files)",
                        hint=f"choose a writable {option}")
    return path


def written_message(view, field: str, written: int) -> str:
    """What a field-filling command prints: how many samples it wrote, and how many were
    already done by an earlier identical run (a resume), instead of a bare "0 samples"."""
    total = len(view)
    have = view.exists(field).count() if total else 0
    before = max(have - written, 0)
    if written == 0 and total and have == total:
        return f"'{field}': all {total} samples already done (resumed)"
    if before:
        return f"'{field}' written on {written} samples ({before} already done, resumed)"
    return f"'{field}' written on {written} samples"


def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    """``--dataset NAME`` (and an optional saved ``--view``) for commands that act on FiftyOne."""
    parser.add_argument("--dataset", required=True, help="name of the FiftyOne dataset")
    parser.add_argument("--view", default=None, help="name of a saved view of the dataset to restrict to")


def load_dataset(args, hint: str = ""):
    """The FiftyOne dataset named by ``--dataset``; a SeplError listing the datasets if there
    is none (``hint`` replaces that list)."""
    import fiftyone as fo

    from ..errors import SeplError

    if not fo.dataset_exists(args.dataset):
        raise SeplError(f"no FiftyOne dataset '{args.dataset}'", hint=hint or f"datasets: {fo.list_datasets()}")
    return fo.load_dataset(args.dataset)


def load_view(args, hint: str = ""):
    """``load_dataset``, restricted to the saved ``--view`` when given (a SeplError listing
    the saved views if it has none of that name)."""
    from ..errors import SeplError

    ds = load_dataset(args, hint)
    name = getattr(args, "view", None)
    if not name:
        return ds
    if not ds.has_saved_view(name):
        raise SeplError(f"dataset '{ds.name}' has no saved view '{name}'", hint=f"saved views: {ds.list_saved_views()}")
    return ds.load_saved_view(name)


def add_workers_arg(parser: argparse.ArgumentParser, what: str = "processes") -> None:
    """``--workers N``: CPU processes for the step (default 0 = all cores, ``os.cpu_count()``)."""
    parser.add_argument("--workers", type=int, default=0,
                        help=f"{what} (default 0: all cores, started once the first samples show the run "
                             f"outlasts starting them); results do not depend on it")
