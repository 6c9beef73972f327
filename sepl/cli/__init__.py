"""The ``sepl`` command line.

Each sub-command lives in its own module of this package and exposes
``register(subparsers) -> argparse.ArgumentParser``; the parser it returns must set
``func`` (a callable taking the parsed args and returning an exit code or None) with
``parser.set_defaults(func=...)``. Modules are discovered, so adding a command touches
no shared file. Heavy imports belong inside ``func``, so ``sepl --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback
from typing import List, Optional

from .. import __version__
from ..errors import SeplError

DESCRIPTION = """\
sepl turns image-level tags into pixel-accurate semantic segmentation labels with the
Segment Anything Model (SAM): it refines CAM seeds with class-agnostic masks (SEPL),
makes Grounded-SAM pseudo-labels, trains CAM (HFPL) and DeepLab networks, and scores
label maps, on folders or on FiftyOne datasets.

Run `sepl COMMAND --help` for the options and examples of each command.
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples in epilogs as written and shows defaults."""


def _command_modules() -> List[str]:
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return sorted(names)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sepl", description=DESCRIPTION, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"sepl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in _command_modules():
        module = importlib.import_module(f"{__name__}.{name}")
        sp = module.register(sub)
        sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks on errors")
    return parser


def _quiet_database_notice() -> None:
    """FiftyOne prints a MongoDB-version notice on every connection; a CLI user cannot act on
    it, so the CLI (only: the library leaves FiftyOne's config alone) turns the check off
    unless $FIFTYONE_DATABASE_VALIDATION says otherwise."""
    import os

    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    if "fiftyone" in sys.modules and os.environ["FIFTYONE_DATABASE_VALIDATION"].lower() in ("false", "0"):
        import fiftyone as fo  # already imported (a caller in the same process): its config is read

        fo.config.database_validation = False


def main(argv: Optional[List[str]] = None) -> int:
    _quiet_database_notice()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        print("sepl: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # one clear line unless --verbose
        if getattr(args, "verbose", False):
            traceback.print_exc()
        kind = "" if isinstance(e, SeplError) else f"{type(e).__name__}: "
        print(f"sepl: error: {kind}{e}", file=sys.stderr)
        if not getattr(args, "verbose", False) and not isinstance(e, SeplError):
            print("sepl: run again with --verbose for the traceback", file=sys.stderr)
        return 1
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
