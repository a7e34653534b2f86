"""The main job (``make demo``): train the tiny NFY model on the demo corpus on CPU, then narrate.

1. Build the synthetic demo corpus (``datamodules.demo_corpus``) under ``--root`` if absent.
2. Train ``ete.yaml`` + ``tiny.yaml`` on it (CPU, bounded by ``--max-minutes``), with
   TensorBoard logs, generated samples every few epochs and checkpoints.
3. Generate one video from held-out inputs: the face and the voice of a test-split speaker
   (never seen in training) and a sentence that is not in the corpus.
4. Print where the TensorBoard logs, the checkpoint and the mp4 are.

The tiny model learns the rough colours of faces and the loudness contour of speech in that
time, not intelligible lip-synced speech: the job shows the whole pipeline runs end to end.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Optional

from lightning.pytorch import Callback

from datamodules.conventions import SAMPLE_RATE
from datamodules.media import read_audio, read_video

log = logging.getLogger(__name__)

NEW_SENTENCE = "A quiet river runs past the old stone bridge before the morning light."
"""Spoken in the demo video; not one of the corpus' prompt sentences."""


def held_out_inputs(root: Path) -> dict:
    """Face frame, face box/landmarks and voice of the first test-split clip of the corpus.

    Raises:
        RuntimeError: the corpus has no test-split clip.
    """
    from datamodules.demo_corpus import load_metadata

    test = [m for m in load_metadata(root) if m["split"] == "test"]
    if not test:
        raise RuntimeError(f"the demo corpus at {root} has no test-split clip to take held-out inputs from")
    clip = test[0]
    path = root / "clips" / f"{clip['key']}.mp4"
    return {
        "key": clip["key"],
        "speaker": clip["speaker"],
        "image": read_video(path, end=0.04)[0],  # (H, W, 3) uint8, frame 0
        "face_box": clip["face_box"],
        "landmarks": clip["landmarks"],
        "voice": read_audio(path, sample_rate=SAMPLE_RATE),  # the held-out speaker's voice
        "transcript": clip["transcript"],
    }


def train(root: Path, out_dir: Path, max_minutes: float, extra: Optional[list[str]] = None,
          callbacks: Optional[list[Callback]] = None):
    """Fit tiny.yaml on the corpus at ``root`` (plus ``extra`` fit flags and ``callbacks``).

    Returns:
        The finished :class:`~experiments.fit.NFYCLI` (``model``, ``datamodule``, ``trainer``).
    """
    from experiments.fit import NFYCLI

    args = [
        "--config", "ete.yaml", "--config", "tiny.yaml",
        f"--data.init_args.root={root}",
        f"--trainer.default_root_dir={out_dir}",
        f"--trainer.logger.init_args.save_dir={out_dir}",
        f"--trainer.max_time=00:00:{int(max_minutes):02d}:{int(max_minutes % 1 * 60):02d}",
        *(extra or []),
    ]
    cli = NFYCLI(args=args)
    cli.trainer.callbacks.extend(callbacks or [])
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli


def main(argv: Optional[list[str]] = None) -> int:
    """Run the demo; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Other --flags go to the trainer CLI (experiments.fit).")
    parser.add_argument("--root", type=Path, default=Path("data/demo"), help="demo corpus folder (built if absent)")
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="logs, checkpoints, video")
    parser.add_argument("--max-minutes", type=float, default=6.0,
                        help="training time budget; the corpus (under 2 min), preprocessing and generation come on top")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps per window at generation")
    parser.add_argument("--num-clips", type=int, default=100, help="clips of a newly built corpus")
    args, overrides = parser.parse_known_args(argv)  # the rest: fit flags, e.g. --trainer.max_steps=50
    if args.steps is not None and args.steps < 1:  # generation comes after minutes of training: check now
        parser.error(f"--steps must be >= 1 (DDIM steps per window), got {args.steps}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from datamodules.demo_corpus import ensure_demo_corpus
    from experiments.generate import generate

    started = time.perf_counter()
    # 1. Corpus
    root = Path(ensure_demo_corpus(args.root, num_clips=args.num_clips))
    # 2. Training
    cli = train(root, args.out, args.max_minutes, overrides)
    trained = time.perf_counter() - started
    checkpoint = cli.trainer.checkpoint_callback.last_model_path or cli.trainer.checkpoint_callback.best_model_path
    # 3. Held-out generation
    held = held_out_inputs(root)
    video = args.out / "demo.mp4"
    result = generate(
        checkpoint, held["image"], held["voice"], NEW_SENTENCE, out=video, num_inference_steps=args.steps,
        face_box=held["face_box"], landmarks=held["landmarks"],
    )
    # 4. Where things are
    log_dir = cli.trainer.logger.log_dir if cli.trainer.logger is not None else "(no logger)"
    print(f"demo corpus:  {root}")
    print(f"trained:      {cli.trainer.global_step} steps, {cli.trainer.current_epoch} epochs in {trained / 60:.1f} min")
    print(f"final losses: " + ", ".join(f"{k}={float(v):.4f}" for k, v in sorted(cli.trainer.callback_metrics.items())
                                         if k.startswith("train/") and k.endswith("_epoch")))
    print(f"tensorboard:  tensorboard --logdir {log_dir}")
    print(f"checkpoint:   {checkpoint}")
    print(f"video:        {result.path}  ({len(result.video)} frames, {len(result.wav) / SAMPLE_RATE:.2f} s, "
          f"face and voice of held-out speaker {held['speaker']}, text: {NEW_SENTENCE!r})")
    print(f"total time:   {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
