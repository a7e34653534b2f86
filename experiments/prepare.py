"""Preprocess one dataset into the cache, optionally transcribe it and write LitData chunks.

Examples::

    python -m experiments.prepare --dataset hdtf --root /data/HDTF --cache /data/cache --workers 8
    python -m experiments.prepare --config prepare.yaml            # the same keys, in YAML
    python -m experiments.prepare --dataset voxceleb --root $NFY_VOXCELEB --cache /data/cache \\
        --transcribe whisper --whisper-model openai/whisper-large-v3 --litdata-output s3://bucket/vox

The run is resumable: finished clips are skipped, an interrupted clip leaves nothing behind.
Rejected clips (unreadable, no audio, no face, too short...) are listed in ``<cache>/rejects.jsonl``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Optional, Sequence

from datamodules.combined import ENV_VARS, MODULES

log = logging.getLogger("experiments.prepare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.prepare", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML file with any of the options below (flags override it)")
    parser.add_argument("--dataset", choices=sorted(MODULES), help="which dataset")
    parser.add_argument("--root", help=f"dataset folder (default: the environment variable, {ENV_VARS})")
    parser.add_argument("--cache", default="cache", help="preprocessing cache folder")
    parser.add_argument("--workers", type=int, default=0, help="preprocessing processes (0 = this process)")
    parser.add_argument("--image-size", type=int, default=512, help="side of the face crop")
    parser.add_argument("--max-clips", type=int, default=None, help="preprocess at most this many clips")
    parser.add_argument("--transcribe", choices=("none", "whisper", "pocketsphinx"), default="none",
                        help="write the transcript/language sidecar after preprocessing")
    parser.add_argument("--whisper-model", default="openai/whisper-small", help="hub id or local Whisper folder")
    parser.add_argument("--english-only", type=lambda v: v.lower() in ("1", "true", "yes"), default=True,
                        help="keep only English clips in the splits and chunks")
    parser.add_argument("--litdata-output", default=None, help="write LitData chunks here (local or s3://...)")
    parser.add_argument("--litdata-workers", type=int, default=1, help="litdata.optimize processes")
    parser.add_argument("--seed", type=int, default=0, help="split seed")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Flags over ``--config`` values over defaults; config keys use ``_`` or ``-``."""
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    if first.config:
        import yaml

        with open(first.config) as handle:
            values = yaml.safe_load(handle) or {}
        known = {a.dest for a in parser._actions}
        values = {k.replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(values) - known)
        if unknown:
            parser.error(f"{first.config}: unknown keys {unknown}; expected some of {sorted(known - {'help'})}")
        parser.set_defaults(**values)
    args = parser.parse_args(argv)
    if not args.dataset:
        parser.error("--dataset is required (flag or config key)")
    args.root = args.root or os.environ.get(ENV_VARS[args.dataset])
    if not args.root:
        parser.error(f"--root is required (or set {ENV_VARS[args.dataset]})")
    return args


def make_transcriber(args: argparse.Namespace) -> Any:
    from datamodules.transcribe import PocketSphinxTranscriber, WhisperTranscriber

    if args.transcribe == "whisper":
        return WhisperTranscriber(args.whisper_model)
    return PocketSphinxTranscriber()


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from datamodules.preprocess import load_rejects, preprocess_clips

    module = MODULES[args.dataset](root=args.root, cache_dir=args.cache, image_size=args.image_size,
                                   max_clips=args.max_clips, english_only=args.english_only, seed=args.seed)
    sources = module.discover_sources()
    print(f"{args.dataset}: {len(sources)} clips found under {args.root}", flush=True)
    report = preprocess_clips(sources, args.cache, module.config, num_workers=args.workers,
                              progress=not args.no_progress)
    print(f"preprocessing: {report}", flush=True)
    rejects = [r for r in load_rejects(args.cache) if r["dataset"] == module.dataset_name]
    if rejects:
        print(f"{len(rejects)} rejected clips listed in {os.path.join(args.cache, 'rejects.jsonl')}")
    if args.transcribe != "none":
        from datamodules.transcribe import transcribe_cache

        added = transcribe_cache(args.cache, make_transcriber(args), progress=not args.no_progress)
        print(f"transcribed {added} clips into {os.path.join(args.cache, 'transcripts.jsonl')}")
    if args.litdata_output:
        from datamodules.streaming import optimize_splits

        counts = optimize_splits(module.streaming_records(), args.cache, args.litdata_output, args.litdata_workers)
        print(f"LitData chunks in {args.litdata_output}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
