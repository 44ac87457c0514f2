"""`python -m scripts.synthetic`'s command line: write the demo video or a training data set.

    python -m scripts.synthetic video OUT.mp4 --truth OUT.json --frames 300
    python -m scripts.synthetic dataset DIR --train 800 --val 200

The same --seed writes the same frames and boxes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from scripts.synthetic.dataset import write_yolo_dataset
from scripts.synthetic.video import DEFAULT_VIDEO_SEED, write_demo_video


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.synthetic", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    video = sub.add_parser("video", help="write a demo video and its ground truth")
    video.add_argument("out", type=Path)
    video.add_argument("--truth", type=Path, required=True)
    video.add_argument("--frames", type=int, default=300)
    video.add_argument("--width", type=int, default=640)
    video.add_argument("--height", type=int, default=360)
    video.add_argument("--fps", type=float, default=10.0)
    video.add_argument("--seed", type=int, default=DEFAULT_VIDEO_SEED)
    dataset = sub.add_parser("dataset", help="write a YOLO training data set")
    dataset.add_argument("root", type=Path)
    dataset.add_argument("--train", type=int, default=800)
    dataset.add_argument("--val", type=int, default=200)
    dataset.add_argument("--width", type=int, default=640)
    dataset.add_argument("--height", type=int, default=360)
    dataset.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.command == "video":
        write_demo_video(
            args.out,
            args.truth,
            args.frames,
            args.width,
            args.height,
            args.fps,
            args.seed,
        )
        sys.stdout.write(f"wrote {args.out} and {args.truth}\n")
    else:
        yaml_path = write_yolo_dataset(args.root, args.train, args.val, args.width, args.height, args.seed)
        sys.stdout.write(f"wrote {yaml_path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
