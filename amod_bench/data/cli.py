"""`bench.py shards`: write a dataset as WebDataset shards, or check an existing shard folder.

    python bench.py shards SOURCE --out DIR [--root RAW] [options]   # write (resumable)
    python bench.py shards verify DIR                                 # read every sample back
    python bench.py shards index DIR|SPEC.yaml                        # count shards once, write a manifest

SOURCE: imagefolder | imagenet | flowers102 | pets | cars | digits | mnist5k (docs/DATA.md).
"""
from __future__ import annotations

import argparse
import os
import shlex

from amod_bench.data.sources import SOURCES

ACTIONS = ("verify", "index")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", choices=SOURCES + ACTIONS, metavar="SOURCE",
                        help=f"what to write ({', '.join(SOURCES)}), or 'verify DIR' / 'index DIR'")
    parser.add_argument("path", nargs="?", help="the shard folder (or dataset spec .yaml), for verify and index")
    parser.add_argument("--root", help="raw data: ImageFolder tree, or torchvision root for flowers102/pets/cars")
    parser.add_argument("--out", help="dataset folder to write (shards + manifest.json)")
    parser.add_argument("--download", action="store_true",
                        help="let torchvision download flowers102/pets into --root (off: offline by default)")
    parser.add_argument("--seed", type=int, default=0, help="split and shard-order seed (default 0)")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="stratified val fraction when the source has no val split (default 0.2)")
    parser.add_argument("--heldout-fraction", type=float, default=0.0,
                        help="stratified fraction of train kept as split 'heldout' for lr selection (default 0)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--maxcount", type=int, help="samples per shard (default 1000, ImageNet's convention)")
    size.add_argument("--num-shards", type=int, help="near-equal shards per split instead of --maxcount")
    parser.add_argument("--format", choices=("jpg", "png"), help="image encoding (default: png for digits/"
                        "mnist5k, jpg otherwise; JPEG files are copied unchanged)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality when re-encoding (default 95)")
    parser.add_argument("--max-size", type=int, help="downscale so the shorter side is at most this many pixels")
    parser.add_argument("--prefix", help="shard name prefix (default: the source name, e.g. imagenet)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="parallel processes")
    parser.add_argument("--overwrite", action="store_true", help="replace a folder written with other options")
    parser.add_argument("--verify", action="store_true", help="after writing, read every sample back")
    parser.add_argument("--num-classes", type=int, help="index: class count (default: largest label + 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _command(args: argparse.Namespace, out: str) -> str:
    """The canonical command line for these options: rerunning it resumes the write."""
    parts = ["python", "bench.py", "shards", args.source]
    if args.root:
        parts += ["--root", os.path.abspath(os.path.expanduser(args.root))]
    parts += ["--out", out]
    if args.download:
        parts.append("--download")
    for flag, value, default in (("--seed", args.seed, 0), ("--val-fraction", args.val_fraction, 0.2),
                                 ("--heldout-fraction", args.heldout_fraction, 0.0), ("--maxcount", args.maxcount, None),
                                 ("--num-shards", args.num_shards, None), ("--format", args.format, None),
                                 ("--quality", args.quality, 95), ("--max-size", args.max_size, None),
                                 ("--prefix", args.prefix, None)):
        if value != default:
            parts += [flag, str(value)]
    return shlex.join(parts)


def main(args: argparse.Namespace) -> int:
    from amod_bench.data.errors import DatasetError
    from amod_bench.data.checking import index_shards, verify_shards
    from amod_bench.data.writer import write_shards

    progress = not args.no_progress
    try:
        if args.source in ACTIONS:
            if not args.path:
                print(f"bench.py shards {args.source} needs the shard folder: bench.py shards {args.source} DIR")
                return 2
            if args.source == "index":
                manifest, written = index_shards(args.path, num_classes=args.num_classes, workers=args.workers,
                                                 progress=progress)
                print(f"wrote {written}: {manifest['num_classes']} classes, " + ", ".join(
                    f"{s} {e['num_samples']} samples" for s, e in manifest["splits"].items()))
                named = os.path.dirname(written) if os.path.basename(written) == "manifest.json" else written
                print(f"a suite names it as  dataset: {named}")
                return 0
            return 1 if verify_shards(args.path, workers=args.workers, progress=progress) else 0
        if not args.out:
            print("bench.py shards SOURCE needs --out DIR")
            return 2
        from amod_bench.data.sources import make_source

        out = os.path.abspath(os.path.expanduser(args.out))
        manifest = write_shards(
            make_source(args.source, args.root, download=args.download), out, seed=args.seed,
            val_fraction=args.val_fraction, heldout_fraction=args.heldout_fraction, maxcount=args.maxcount,
            num_shards=args.num_shards, image_format=args.format, quality=args.quality, max_size=args.max_size,
            workers=args.workers, prefix=args.prefix, overwrite=args.overwrite, progress=progress,
            command=_command(args, out))
        print(f"wrote {out}: " + ", ".join(f"{split} {e['num_samples']} samples in {len(e['shards'])} shards"
                                           for split, e in manifest["splits"].items()))
        if args.verify:
            return 1 if verify_shards(out, workers=args.workers, progress=progress) else 0
        return 0
    except DatasetError as exn:
        print(f"error: {exn}")
        return 1
