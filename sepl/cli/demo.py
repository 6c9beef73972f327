"""``sepl demo``: the whole pipeline on generated scenes, offline, then the App."""

from __future__ import annotations

from ._common import add_command


def register(subparsers):
    p = add_command(
        subparsers, "demo",
        help="run the whole pipeline on generated scenes (no downloads) and open the App",
        description="Build the persistent FiftyOne dataset 'sepl-demo' from generated scenes with exact "
                    "ground truth, make seeds (by default: train a small CAM network on the scenes' "
                    "image-level labels alone and take its seeds; --seeds simulated: the ground truth degraded "
                    "the way CAMs degrade it, no network) and class-agnostic masks (SAM when a checkpoint is "
                    "configured, else classical superpixels, which are NOT SAM), refine the seeds with SEPL, "
                    "score seeds and SEPL labels, print a before/after table, write pictures to the output "
                    "folder and open the App on the worst samples. Reruns reuse what exists.",
        examples="  sepl demo                                   # everything, then the App on port 5151\n"
                 "  sepl demo --no-app                          # table and pictures only\n"
                 "  sepl demo --fresh --num-images 200          # rebuild with more scenes\n"
                 "  sepl demo --seeds simulated --seed-preset harsh   # no network: simulated seeds\n"
                 "  sepl demo --sam-checkpoint ~/models/sam_vit_h_4b8939.pth   # real SAM masks\n"
                 "  sepl demo --port 5252 --address 0.0.0.0     # serve the App to other machines",
    )
    p.add_argument("--num-images", type=int, default=100, help="generated scenes")
    p.add_argument("--size", default="160x200", help="scene size HxW in pixels")
    p.add_argument("--scene-seed", type=int, default=0, help="random seed of the scenes and seeds")
    p.add_argument("--seeds", choices=("cam", "simulated"), default="cam",
                   help="where the seeds come from: 'cam' trains the CPU-tiny CAM network (sepl.cam, HFPL "
                        "feature similarity) on the image-level labels only and takes its seeds (the WSSS "
                        "setting; about 25 s on two CPU cores; its checkpoint is kept in the data dir and "
                        "reused); 'simulated' degrades the ground truth the way CAMs do (sepl.seedsim; NOT a "
                        "network, seconds)")
    p.add_argument("--cam-epochs", type=int, default=40, help="--seeds cam: training epochs")
    p.add_argument("--cam-crop", type=int, default=128, help="--seeds cam: training crop size in pixels")
    p.add_argument("--cam-threshold", type=float, default=0.5,
                   help="--seeds cam: background threshold on the normalised CAMs")
    p.add_argument("--seed-preset", choices=("mild", "cam", "harsh"), default="cam",
                   help="--seeds simulated: how poor the simulated seeds are")
    p.add_argument("--masks", choices=("auto", "sam", "superpixels"), default="auto",
                   help="mask source: auto = SAM when a checkpoint is configured, else superpixels (NOT SAM)")
    p.add_argument("--sam-checkpoint", default=None,
                   help="SAM weights (.pth); default $SEPL_SAM_CHECKPOINT")
    p.add_argument("--sam-model-type", choices=("vit_h", "vit_l", "vit_b"), default=None,
                   help="SAM model of the checkpoint (default: from its file name, else vit_h)")
    p.add_argument("--points-per-side", type=int, default=32, help="SAM automatic-mask point grid")
    p.add_argument("--mode", choices=("paper", "official"), default="paper", help="SEPL merge mode")
    p.add_argument("--name", default="sepl-demo", help="FiftyOne dataset name")
    p.add_argument("--output", default="sepl-demo-output", help="folder for the table, plots and summary")
    p.add_argument("--data-dir", default=None,
                   help="folder for the generated images, labels and seeds (default: <FiftyOne dataset dir>/NAME)")
    p.add_argument("--fresh", action="store_true", help="delete and rebuild the dataset and generated files")
    p.add_argument("--no-app", action="store_true", help="do not open the App at the end")
    p.add_argument("--port", type=int, default=5151, help="App port")
    p.add_argument("--address", default="127.0.0.1", help="App address (0.0.0.0 to serve other machines)")
    p.set_defaults(func=run)
    return p


def _size(text: str):
    from ..errors import SeplError

    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SeplError(f"--size '{text}' is not HxW", hint="e.g. --size 160x200")
    if h < 32 or w < 32:
        raise SeplError(f"--size {text} is too small", hint="use at least 32x32")
    return h, w


def run(args) -> int:
    import time

    from ..demo import DemoConfig, launch_app, report, run_demo
    from ..errors import SeplError

    if args.num_images < 1:
        raise SeplError("--num-images must be at least 1")
    if args.cam_epochs < 1 or args.cam_crop < 16:
        raise SeplError("--cam-epochs must be at least 1 and --cam-crop at least 16")
    cfg = DemoConfig(
        name=args.name, num_images=args.num_images, size=_size(args.size), scene_seed=args.scene_seed,
        seeds=args.seeds, seed_preset=args.seed_preset, cam_epochs=args.cam_epochs, cam_crop=args.cam_crop,
        cam_threshold=args.cam_threshold, masks=args.masks, sam_checkpoint=args.sam_checkpoint,
        sam_model_type=args.sam_model_type, points_per_side=args.points_per_side, mode=args.mode,
        output_dir=args.output, data_dir=args.data_dir, fresh=args.fresh,
    )
    t = time.perf_counter()
    ds, result = run_demo(cfg)
    report(result)
    print(f"done in {time.perf_counter() - t:.0f} s")
    if not args.no_app:
        launch_app(ds, port=args.port, address=args.address)
    return 0
