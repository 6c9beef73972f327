"""``sepl app``: the FiftyOne App on a dataset, with the sepl operators and panel served."""

from __future__ import annotations

from ._common import add_command, load_view


def register(subparsers):
    p = add_command(
        subparsers, "app",
        help="serve the FiftyOne App on a dataset with the sepl plugin (operators and panel)",
        description="Launch the FiftyOne App (remote mode: open the printed address in a browser) on a "
                    "dataset or one of its saved views. The sepl plugin is made visible to the App's server "
                    "first: when FiftyOne's plugins folder (fo.config.plugins_dir, $FIFTYONE_PLUGINS_DIR) does "
                    "not hold @sepl/sepl, this repository is linked into it. Press Ctrl-C to stop.",
        examples="  sepl app --dataset sepl-demo\n"
                 "  sepl app --dataset voc-train --view worst-samples --port 5252\n"
                 "  sepl app --dataset voc-train --address 0.0.0.0   # serve other machines",
    )
    p.add_argument("--dataset", required=True, help="name of the FiftyOne dataset")
    p.add_argument("--view", default=None, help="name of a saved view to open")
    p.add_argument("--port", type=int, default=5151, help="App port")
    p.add_argument("--address", default="127.0.0.1", help="App address (0.0.0.0 to serve other machines)")
    p.add_argument("--plugins-dir", default=None,
                   help="FiftyOne plugins folder to serve from (default: fo.config.plugins_dir)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..fo.app import launch_app

    view = load_view(args)
    ds = view._dataset
    session = launch_app(view, port=args.port, address=args.address, plugins_dir=args.plugins_dir)
    host = "localhost" if args.address in ("0.0.0.0", "127.0.0.1") else args.address
    print(f"the App: http://{host}:{args.port}/datasets/{ds.name}   (press Ctrl-C to stop)")
    try:
        session.wait(-1)
    except KeyboardInterrupt:
        print("stopping the App")
    finally:
        session.close()
    return 0
