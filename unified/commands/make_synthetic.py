"""Generate the built-in synthetic world (cached: a folder with the same parameters is reused).

Example: ``unified make-synthetic --out data/synthetic --images 600 --sequences 4``

``python tools/make_synthetic.py`` is the same command.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from unified.data.synthetic import SyntheticConfig, make_synthetic

EPILOG = """\
labels of the still images (shapes/{train,val}.json, COCO):
  bbox          the whole shape's box (occluded pixels included); image labels under images[].labels
  segmentation  exact mask of the shape's visible part (after later shapes cover it), COCO compressed
                RLE {size: [h, w], counts: str}; area = its pixel count
  keypoints     K = 4 extreme points of the whole shape, [x, y, v] * 4 in the order top, right, bottom,
                left: the top-most, right-most, bottom-most, left-most pixel (of an extreme row or column,
                the pixel nearest its middle) as pixel centres x + 0.5, y + 0.5; v = 2 visible, v = 1
                covered by a later shape; num_keypoints = 4. flip_idx = [0, 3, 2, 1] (a horizontal flip
                swaps right and left); no vertical-flip permutation exists, so train without flipud.
video sequences (tracks/): MOTChallenge gt.txt, boxes and identities.

dataset.yaml declares the stills as [boxes, image_labels] (the demo); dataset-all.yaml beside it declares
them as [boxes, image_labels, masks, keypoints]. Both carry kinds: {keypoints: {kpt_shape: [4, 3],
flip_idx: [0, 3, 2, 1]}} (OKS sigmas: the default 1/K). Images are the same bytes per seed as format 1.
"""


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run ``unified make-synthetic``; returns the exit code."""
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--images", type=int, default=defaults.images, help="training still images")
    parser.add_argument(
        "--val-images", type=int, default=None, help="validation still images (default images/6)"
    )
    parser.add_argument("--sequences", type=int, default=defaults.sequences, help="training video sequences")
    parser.add_argument(
        "--val-sequences", type=int, default=None, help="validation sequences (default sequences/2)"
    )
    parser.add_argument("--frames", type=int, default=defaults.frames, help="frames per sequence")
    parser.add_argument("--size", type=int, default=defaults.size, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    val_images = (
        args.val_images if args.val_images is not None else max(1, args.images // 6) if args.images else 0
    )
    val_sequences = (
        args.val_sequences
        if args.val_sequences is not None
        else max(1, args.sequences // 2)
        if args.sequences
        else 0
    )
    start = time.perf_counter()
    path = make_synthetic(
        args.out,
        images=args.images,
        val_images=val_images,
        sequences=args.sequences,
        val_sequences=val_sequences,
        frames=args.frames,
        size=args.size,
        seed=args.seed,
    )
    print(f"{path} ready in {time.perf_counter() - start:.1f} s")
    return 0


__all__ = ["EPILOG", "main"]
