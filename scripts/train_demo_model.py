"""Training of the demo detector on synthetic shapes, written to weights/best.pt.

No weights can be downloaded here, so the demo model is trained from scratch
(a model yaml, ``pretrained=False``) on the CPU. Steps:

1. generate a training/validation set and a separate held-out set with
   ``scripts.synthetic`` (cached under ``.cache/synthetic-data/``);
2. train at imgsz 320, the size the pipeline serves at (the checkpoint records
   it in ``train_args``, and ``MODEL_IMGSZ`` defaults to it);
3. evaluate mAP50 on the held-out set at the same size;
4. copy the best checkpoint, without its optimizer state, to ``weights/best.pt``.

``--evaluate-only`` skips training and scores the weights already at ``--out``.

Run from the repository root::

    YOLO_OFFLINE=1 python scripts/train_demo_model.py
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Before torch is imported: its thread pools read these once, at start.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

# Run as a file (python scripts/train_demo_model.py), the repository root is not on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts.synthetic import write_yolo_dataset

LOG = logging.getLogger("train_demo_model")
REPO = Path(__file__).resolve().parent.parent
HOLDOUT_SEED_OFFSET = 1_000_003


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--model", default="yolov8n.yaml", help="model yaml (from scratch), or weights to start from")
    p.add_argument("--single-class", action="store_true", help="one class for every shape (a second demo model)")
    p.add_argument("--epochs", type=int, default=26)
    p.add_argument("--close-mosaic", type=int, default=5, help="last epochs without mosaic")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--train", type=int, default=1000, help="training images")
    p.add_argument("--val", type=int, default=200, help="validation images (best.pt picked on it)")
    p.add_argument("--holdout", type=int, default=300, help="held-out images for the final mAP")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.add_argument("--data-dir", type=Path, default=REPO / ".cache" / "synthetic-data")
    p.add_argument("--runs-dir", type=Path, default=REPO / ".cache" / "runs")
    p.add_argument("--name", default="demo")
    p.add_argument("--out", type=Path, default=REPO / "weights" / "best.pt")
    p.add_argument("--evaluate-only", action="store_true", help="score --out on the held-out set, no training")
    return p.parse_args(argv)


def _dataset(root: Path, n_train: int, n_val: int, args: argparse.Namespace, seed: int) -> Path:
    """Generate a data set once; the directory name pins its parameters."""
    name = f"train{n_train}-val{n_val}-{args.width}x{args.height}-seed{seed}"
    yaml_path = root / name / "data.yaml"
    if yaml_path.exists():
        LOG.info("reusing %s", yaml_path.parent)
        return yaml_path
    LOG.info("generating %s", root / name)
    return write_yolo_dataset(root / name, n_train, n_val, args.width, args.height, seed)


def _offline_ultralytics() -> None:
    """Stop ultralytics from reaching for the network.

    Checking a data set calls ``check_font``, which asks a URL for Arial.ttf
    (a font for plots we never draw, since plots=False).
    """
    import ultralytics.data.utils as data_utils

    data_utils.check_font = _no_font


def _no_font(*_args: object, **_kwargs: object) -> None:
    return None


def _pin_threads(threads: int) -> Any:
    """A callback that re-applies the thread limit.

    ultralytics' select_device resets torch's thread count to cpu_count - 1.
    """
    import torch

    def callback(_trainer: Any) -> None:
        torch.set_num_threads(threads)

    torch.set_num_threads(threads)
    return callback


def _train(args: argparse.Namespace, data_yaml: Path) -> Path:
    from ultralytics.models import YOLO

    model = YOLO(args.model, task="detect")
    model.add_callback("on_pretrain_routine_end", _pin_threads(args.threads))
    model.train(
        data=str(data_yaml),
        epochs=args.epochs,
        close_mosaic=args.close_mosaic,
        imgsz=args.imgsz,
        batch=args.batch,
        # ultralytics accumulates gradients up to a nominal batch of 64: four
        # times fewer optimizer steps, which a short CPU schedule cannot afford.
        nbs=args.batch,
        device="cpu",
        workers=args.workers,
        # Starting from weights (a .pt), keep them; from a yaml there is nothing to keep.
        pretrained=str(args.model).endswith(".pt"),
        single_cls=args.single_class,
        plots=False,
        cache="ram",
        seed=args.seed,
        project=str(args.runs_dir.resolve()),
        name=args.name,
        exist_ok=True,
    )
    trainer = model.trainer
    if trainer is None or not Path(trainer.best).exists():
        raise SystemExit("training produced no best.pt")
    _log_curve(Path(trainer.save_dir) / "results.csv")
    return Path(trainer.best)


def _log_curve(results_csv: Path) -> None:
    with results_csv.open() as f:
        for row in csv.DictReader(f):
            row = {k.strip(): v for k, v in row.items()}
            LOG.info(
                "epoch %3s  mAP50 %.3f  mAP50-95 %.3f",
                row["epoch"],
                float(row["metrics/mAP50(B)"]),
                float(row["metrics/mAP50-95(B)"]),
            )


def _evaluate(weights: Path, holdout_yaml: Path, args: argparse.Namespace) -> float:
    from ultralytics.models import YOLO

    metrics = YOLO(str(weights)).val(
        data=str(holdout_yaml),
        single_cls=args.single_class,
        split="val",
        imgsz=args.imgsz,
        batch=args.batch,
        device="cpu",
        workers=args.workers,
        plots=False,
        project=str(args.runs_dir.resolve()),
        name=f"{args.name}-holdout",
        exist_ok=True,
    )
    return float(metrics.box.map50)


def _publish(best: Path, out: Path) -> None:
    """Copy the checkpoint without optimizer state: a fifth of the size, same weights."""
    from ultralytics.utils.torch_utils import strip_optimizer

    out.parent.mkdir(parents=True, exist_ok=True)
    strip_optimizer(best, str(out))


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = _parse(argv)
    _offline_ultralytics()
    _pin_threads(args.threads)
    # A different seed gives images the model never saw, not even for picking best.pt.
    holdout_yaml = _dataset(args.data_dir, 0, args.holdout, args, args.seed + HOLDOUT_SEED_OFFSET)
    if not args.evaluate_only:
        data_yaml = _dataset(args.data_dir, args.train, args.val, args, args.seed)
        _publish(_train(args, data_yaml), args.out)
    map50 = _evaluate(args.out, holdout_yaml, args)
    LOG.info(
        "held-out mAP50 %.4f at imgsz %d; wrote %s (%.1f MB)",
        map50,
        args.imgsz,
        args.out,
        args.out.stat().st_size / 1e6,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
