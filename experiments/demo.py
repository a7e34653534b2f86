"""The main job (``make demo``): train the tiny NFY model on the demo corpus on CPU, then narrate.

1. Build the synthetic demo corpus (``datamodules.demo_corpus``) under ``--root`` if absent.
2. Train ``ete.yaml`` + ``tiny.yaml`` on it (CPU, bounded by ``--max-minutes``), with
   TensorBoard logs, generated samples every few epochs and checkpoints.
3. Generate one video from held-out inputs: the face, the first 2 s of voice and the transcript
   of a test-split clip (its speaker is never seen in training).
4. Measure it against that clip: how the generated mouth opening follows the generated speech
   (Pearson r per frame, the mouth measured from pixels as the corpus' own test does) and the
   speech length next to the clip's; save a contact sheet (``demo.png``: generated frames over the
   ground truth's, generated mel over the ground truth's, the mouth-opening curves).
5. Print where the TensorBoard logs, the checkpoint, the mp4 and the sheet are.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
from lightning.pytorch import Callback

from datamodules.conventions import SAMPLE_RATE, SAMPLES_PER_FRAME
from datamodules.media import read_audio, read_video

log = logging.getLogger(__name__)

SHEET_FRAMES = 12
"""Frames in each strip of the contact sheet."""


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


def ground_truth(datamodule, key: str) -> dict[str, np.ndarray]:
    """The preprocessed test clip ``key`` (the crop and size the model works at): ``frames`` (T, S, S, 3)
    uint8, ``wav`` (S,) float32 and ``lip`` (S, S) {0, 1}."""
    from datamodules.preprocess import load_clip

    dataset = datamodule.datasets["test"]
    record = next(r for r in dataset.records if r["key"] == key)
    clip = load_clip(dataset.cache_dir, record)
    return {"frames": clip.frames(), "wav": clip.wav(), "lip": clip.masks()["lip"]}


def frame_rms(wav: np.ndarray, frames: int) -> np.ndarray:
    """(frames,) RMS of ``wav`` (S,) at 16 kHz per 25 fps video frame (640 samples), zero past its end."""
    wav = np.pad(wav, (0, max(0, frames * SAMPLES_PER_FRAME - wav.size)))[: frames * SAMPLES_PER_FRAME]
    return np.sqrt(np.mean(wav.reshape(frames, SAMPLES_PER_FRAME).astype(np.float64) ** 2, axis=1))


def _r(value: float) -> str:
    """A correlation for printing; NaN means one side never changed (e.g. a mouth that never opens)."""
    return f"{value:.2f}" if np.isfinite(value) else "undefined (the mouth never opens)"


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two equally long series; NaN when either is constant."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def measure(video: np.ndarray, wav: np.ndarray, truth: np.ndarray, true_wav: np.ndarray,
            lip_mask: np.ndarray) -> dict[str, np.ndarray | float]:
    """Mouth opening and speech energy per frame of a generated clip and its ground truth, and their r.

    Args:
        video: (T, S, S, 3) uint8 generated frames; ``wav`` (T * 640,) its speech.
        truth: (T', S, S, 3) uint8 ground-truth frames, cropped as the model's; ``true_wav`` their speech.
        lip_mask: (S, S) {0, 1} lip mask of the generated frames' crop (locates the mouth).
    """
    from datamodules.demo_corpus import mouth_opening

    ys, xs = np.nonzero(lip_mask)
    size = video.shape[1]
    opening, opening_gt = mouth_opening(video, (xs.mean(), ys.mean()), size), \
        mouth_opening(truth, (xs.mean(), ys.mean()), size)
    energy = frame_rms(wav, len(video))
    n = min(len(opening), len(opening_gt))
    return {"opening": opening, "opening_gt": opening_gt, "energy": energy,
            "energy_gt": frame_rms(true_wav, len(truth)),
            "sync_corr_speech": pearson(opening, energy), "sync_corr_gt": pearson(opening[:n], opening_gt[:n])}


def contact_sheet(path: Path, video: np.ndarray, truth: np.ndarray, wav: np.ndarray, true_wav: np.ndarray,
                  measured: dict) -> Path:
    """``path`` (PNG): generated frames over ground-truth frames, generated mel over the truth's, and
    the mouth-opening and speech-energy curves of both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from datamodules.audio import log_mel

    picks = np.linspace(0, min(len(video), len(truth)) - 1, SHEET_FRAMES).round().astype(int)
    fig, axes = plt.subplots(5, 1, figsize=(SHEET_FRAMES * 1.1, 11), gridspec_kw={"height_ratios": [1, 1, 1, 1, 1.2]})
    for ax, frames, title in ((axes[0], video, "generated"), (axes[1], truth, "ground truth")):
        ax.imshow(np.concatenate(list(frames[picks]), axis=1))
        ax.set_title(f"{title}: frames {', '.join(map(str, picks))}", fontsize=9)
        ax.axis("off")
    for ax, audio, title in ((axes[2], wav, "generated mel"), (axes[3], true_wav, "ground-truth mel")):
        ax.imshow(log_mel(audio).numpy(), origin="lower", aspect="auto", cmap="magma")
        ax.set_title(f"{title} ({audio.size / SAMPLE_RATE:.2f} s)", fontsize=9)
        ax.set_ylabel("mel bin")
    ax = axes[4]
    for key, label in (("opening", "mouth opening, generated"), ("opening_gt", "mouth opening, ground truth")):
        series = np.asarray(measured[key], np.float64)
        ax.plot(series / max(series.max(), 1), label=label)
    for key, label in (("energy", "speech RMS, generated"), ("energy_gt", "speech RMS, ground truth")):
        series = np.asarray(measured[key])
        ax.plot(series / max(series.max(), 1e-9), "--", label=label)
    ax.set_xlabel("video frame (25 fps)")
    ax.set_title(f"sync r (mouth vs own speech) {measured['sync_corr_speech']:.2f}, "
                 f"(mouth vs ground-truth mouth) {measured['sync_corr_gt']:.2f}", fontsize=9)
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def train(root: Path, out_dir: Path, max_minutes: float, extra: list[str] | None = None,
          callbacks: list[Callback] | None = None):
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


def main(argv: list[str] | None = None) -> int:
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
    # 3. Held-out generation: a test clip's face, first 2 s of voice and transcript
    held = held_out_inputs(root)
    video = args.out / "demo.mp4"
    result = generate(
        checkpoint, held["image"], held["voice"], held["transcript"], out=video,  # generate takes its first 2 s of speech
        num_inference_steps=args.steps, face_box=held["face_box"], landmarks=held["landmarks"],
    )
    # 4. Against the ground truth, as the model sees it (the preprocessed crop)
    truth = ground_truth(cli.datamodule, held["key"])
    measured = measure(result.video, result.wav, truth["frames"], truth["wav"], truth["lip"])
    sheet = contact_sheet(args.out / "demo.png", result.video, truth["frames"], result.wav, truth["wav"], measured)
    # 5. Where things are
    log_dir = cli.trainer.logger.log_dir if cli.trainer.logger is not None else "(no logger)"
    print(f"demo corpus:  {root}")
    print(f"trained:      {cli.trainer.global_step} steps, {cli.trainer.current_epoch} epochs in {trained / 60:.1f} min")
    print("final losses: " + ", ".join(f"{k}={float(v):.4f}" for k, v in sorted(cli.trainer.callback_metrics.items())
                                         if k.startswith("train/") and k.endswith("_epoch")))
    print(f"tensorboard:  tensorboard --logdir {log_dir}")
    print(f"checkpoint:   {checkpoint}")
    print(f"video:        {result.path}  ({len(result.video)} frames, face, voice and text of held-out clip "
          f"{held['key']} (speaker {held['speaker']}): {held['transcript']!r})")
    print(f"speech:       {len(result.wav) / SAMPLE_RATE:.2f} s generated, the clip says it in "
          f"{len(truth['wav']) / SAMPLE_RATE:.2f} s")
    print(f"lip sync:     mouth opening vs own speech energy r = {_r(measured['sync_corr_speech'])}, "
          f"vs the clip's mouth r = {_r(measured['sync_corr_gt'])} (per frame, Pearson)")
    print(f"sheet:        {sheet}")
    print(f"total time:   {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
