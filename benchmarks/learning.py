"""Does the tiny NFY model learn on the demo corpus? Loss curves and held-out targets.

Trains ``ete.yaml`` + ``tiny.yaml`` on the demo corpus (CPU, at most ``--max-minutes``) and writes,
under ``--out``:

* ``loss_curves.csv`` / ``loss_curves.png``: every loss term (unweighted) and the total per step;
* ``heldout.csv``: per test-split clip (unseen speakers), the figures below;
* ``heldout.json``: their summary, with at least ``mouth_l1``, ``mouth_l1_copy_reference``,
  ``sync_corr_speech``, ``sync_corr_gt``, ``mel_mse``, ``mel_mse_mean_mel``, ``mcd_db``,
  ``mcd_db_mean_mel``, ``stop_within_20pct``, ``wer``, ``wer_ground_truth``, ``train_minutes``,
  ``steps`` (a correlation that cannot be computed, e.g. a mouth that never opens, is ``null``).

Every held-out clip is generated whole and freely from its first frame, its first 2 s and its
transcript (no teacher forcing), then compared with the ground truth:

* mouth-region L1 (lip mask, pixels in [0, 1]) against "copy the reference frame" (target <= 0.8x);
* lip sync: the per-frame mouth opening of the generated video, measured from pixels as the
  corpus' own test measures it (:func:`datamodules.demo_corpus.mouth_opening`), against the
  generated speech's RMS per frame (target r >= 0.5) and the ground truth's opening (r >= 0.4),
  Pearson r pooled over all frames;
* speech: mel MSE against the ground truth and MCD in dB (``metrics.mcd``, WORLD, DTW), each next
  to the "mean mel" baseline (the per-bin mean of training mels, through the same vocoder);
* the stop head: the share of clips whose generated length lies within 20 % of the truth's;
* intelligibility: pocketsphinx WER of the generated speech beside the ground truth's.

Every figure is printed whichever way it falls. Fit flags pass through, so one switch can be
measured with and without (e.g. ``--model.init_args.net.init_args.alignment_aid=false``).

Usage: ``python benchmarks/learning.py [--root data/demo] [--out outputs/learning] [--max-minutes 20] [fit flags]``
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repo root

from lightning_modules.nfy_module import LOSS_TERMS, OPTIONAL_TERMS

TERMS: tuple[str, ...] = (*LOSS_TERMS, *OPTIONAL_TERMS, "loss")


class LossCurve(Callback):
    """Records every training step's loss terms (``NFYLitModule.training_step`` returns them)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.rows.append({"step": float(trainer.global_step),
                          **{term: float(outputs[term]) if term in outputs else float("nan") for term in TERMS}})


def write_curves(rows: list[dict[str, float]], out: Path) -> None:
    """``loss_curves.csv`` and ``loss_curves.png`` (one panel per term)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(out / "loss_curves.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", *TERMS])
        writer.writeheader()
        writer.writerows(rows)
    steps = np.array([r["step"] for r in rows])
    fig, axes = plt.subplots(1, len(TERMS), figsize=(4 * len(TERMS), 3))
    for ax, term in zip(axes, TERMS):
        values = np.array([r[term] for r in rows])
        ax.plot(steps, values, alpha=0.35, label="per step")
        window = max(1, len(values) // 20)
        # trailing mean over whole windows only (zero padding would bend both ends of the curve)
        ax.plot(steps[window - 1 :], np.convolve(values, np.ones(window) / window, mode="valid"),
                label=f"mean of last {window}")
        ax.set_title(term)
        ax.set_xlabel("step")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=100)
    plt.close(fig)


def mean_mel(datamodule: Any, batches: int = 20) -> torch.Tensor:
    """(80,) per-bin mean of the valid frames of up to ``batches`` training batches."""
    total, count = torch.zeros(80, dtype=torch.float64), 0
    for index, batch in enumerate(datamodule.train_dataloader()):
        if index >= batches:
            break
        for mel, length in zip(batch["mel"], batch["mel_lengths"]):
            total += mel[:, : int(length)].double().sum(1)
            count += int(length)
    return (total / max(count, 1)).float()


CLIPS_PER_BATCH = 5
"""Held-out clips generated together (the speech decoder and the UNet run batched)."""


@torch.no_grad()
def heldout(module: Any, datamodule: Any, mel_mean: torch.Tensor, recognizer: Any = None,
            clips: int | None = None) -> list[dict[str, Any]]:
    """Per test clip, the whole utterance generated freely from its photo, first 2 s and transcript.

    Each row: mouth-region L1 of the generated frames and of "copy the reference" against the ground
    truth (pixels in [0, 1], lip mask, the frames both cover), the per-frame mouth opening of the
    generated video and of the ground truth (:func:`datamodules.demo_corpus.mouth_opening`), the
    generated speech's RMS per video frame, mel MSE against the truth and of the mean-mel baseline,
    MCD in dB (WORLD, DTW) of the generated speech and of the mean mel through the same vocoder, the
    generated and true lengths in mel frames, the recognised words of both, and the teacher-forced
    mel MSE (free running minus it is the exposure-bias drift).
    """
    from datamodules.batch import collate
    from datamodules.preprocess import load_clip

    dataset = datamodule.datasets["test"]
    rows = []
    total = len(dataset) if clips is None else min(clips, len(dataset))
    for first in range(0, total, CLIPS_PER_BATCH):
        indices = range(first, min(total, first + CLIPS_PER_BATCH))
        samples = [dataset[i] for i in indices]
        batch = collate(samples)
        out = module.pipeline()(batch["text_ids"], batch["text_mask"], batch["ref_image"], batch["face_mask"],
                                batch["lip_mask"], batch["profile_wav"],
                                num_inference_steps=module.hparams.num_inference_steps,
                                guidance_scale=module.hparams.guidance_scale,
                                generator=torch.Generator().manual_seed(first),
                                max_mel_frames=module.hparams.max_mel_frames)
        forced = module(batch)["pred_mel"]  # the objective's teacher-forced pass, eval mode
        for row, index in enumerate(indices):
            record = dataset.records[index]
            clip = load_clip(dataset.cache_dir, record)
            rows.append(_clip_row(module, out, row, clip, samples[row], record, mel_mean, forced[row], recognizer))
    return rows


def _clip_row(module: Any, out: dict, row: int, clip: Any, sample: dict, record: dict, mel_mean: torch.Tensor,
              forced_mel: torch.Tensor, recognizer: Any) -> dict[str, Any]:
    """One held-out clip's figures (see :func:`heldout`)."""
    from datamodules.demo_corpus import mouth_opening
    from experiments.demo import frame_rms
    from metrics.mcd import MelCepstralDistortion

    truth = clip.frames()  # (T, H, W, 3) uint8
    frames = int(out["num_frames"][row])
    video = (out["video"][row, :frames] * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (G, H, W, 3)
    n = min(len(truth), frames)
    lip = sample["lip_mask"][0].numpy().astype(bool)  # (H, W)
    reference = truth[:1].astype(np.float64) if sample["ref_image"] is None else \
        ((sample["ref_image"].permute(1, 2, 0).numpy() + 1) * 127.5)[None]  # (1, H, W, 3)
    target = truth[:n].astype(np.float64)
    ys, xs = np.nonzero(lip)
    centre, size = (xs.mean(), ys.mean()), truth.shape[1]
    wav_len = int(out["wav_lengths"][row])
    wav = out["wav"][row, :wav_len].numpy()
    true_wav = clip.wav()
    true_mel, true_len = sample["mel"], sample["mel"].shape[1]
    gen_len = int(out["mel_lengths"][row])
    m = max(1, min(gen_len, true_len))
    baseline = mel_mean[:, None].expand(-1, true_len)[None]  # (1, 80, L)
    baseline_wav = module.net.vocoder(baseline)[0].clamp(-1, 1).numpy()
    mcd = MelCepstralDistortion()
    mcd.update([torch.from_numpy(wav), torch.from_numpy(baseline_wav)], [torch.from_numpy(true_wav)] * 2)
    mcd_model, mcd_mean = (float(v) for v in mcd.per_clip())
    words = recognizer([wav, true_wav]) if recognizer is not None else ["", ""]
    return {
        "key": record["key"],
        "transcript": record.get("transcript", ""),
        "mouth_l1": float(np.abs(video[:n].astype(np.float64) - target)[:, lip].mean() / 255),
        "mouth_l1_copy_reference": float(np.abs(reference - target)[:, lip].mean() / 255),
        "opening": mouth_opening(video, centre, size).tolist(),
        "opening_gt": mouth_opening(truth, centre, size).tolist(),
        "energy": frame_rms(wav, frames).tolist(),
        "energy_gt": frame_rms(true_wav, len(truth)).tolist(),
        "mel_mse": float(((out["mel"][row, :, :m] - true_mel[:, :m]) ** 2).mean()),
        "mel_mse_mean_mel": float(((mel_mean[:, None] - true_mel) ** 2).mean()),
        "mel_mse_teacher_forced": float(((forced_mel[:, :true_len] - true_mel) ** 2).mean()),
        "mcd_db": mcd_model,
        "mcd_db_mean_mel": mcd_mean,
        "mel_frames_generated": gen_len,
        "mel_frames_true": true_len,
        "stop_fired": gen_len < int(module.hparams.max_mel_frames),
        "words": words[0],
        "words_ground_truth": words[1],
    }


def summarise(rows: list[dict], minutes: float, steps: int) -> dict[str, Any]:
    """The figures of ``heldout.json``: means over clips; correlations pooled over all frames, as the
    corpus' own test pools them; WER over all utterances (pocketsphinx, Whisper's normaliser)."""
    from experiments.demo import pearson
    from metrics.wer import NormalizedWER

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in rows]))

    opening = np.concatenate([r["opening"] for r in rows]).astype(np.float64)
    energy = np.concatenate([r["energy"] for r in rows])
    paired = [(np.asarray(r["opening"][:n]), np.asarray(r["opening_gt"][:n]))
              for r in rows for n in [min(len(r["opening"]), len(r["opening_gt"]))]]
    gt_opening = np.concatenate([r["opening_gt"] for r in rows]).astype(np.float64)
    gt_energy = np.concatenate([r["energy_gt"][: len(r["opening_gt"])] for r in rows])
    within = [abs(r["mel_frames_generated"] - r["mel_frames_true"]) <= 0.2 * r["mel_frames_true"] for r in rows]
    wer, wer_gt = NormalizedWER(), NormalizedWER()
    wer.update([r["words"] for r in rows], [r["transcript"] for r in rows])
    wer_gt.update([r["words_ground_truth"] for r in rows], [r["transcript"] for r in rows])
    return {
        "clips": len(rows),
        "mouth_l1": mean("mouth_l1"),
        "mouth_l1_copy_reference": mean("mouth_l1_copy_reference"),
        "sync_corr_speech": pearson(opening, energy),
        "sync_corr_gt": pearson(np.concatenate([p[0] for p in paired]).astype(np.float64),
                                 np.concatenate([p[1] for p in paired]).astype(np.float64)),
        "sync_corr_ground_truth_speech": pearson(gt_opening, gt_energy),
        "mouth_opening_mean": float(opening.mean()),
        "mouth_opening_mean_ground_truth": float(gt_opening.mean()),
        "mel_mse": mean("mel_mse"),
        "mel_mse_mean_mel": mean("mel_mse_mean_mel"),
        "mel_mse_teacher_forced": mean("mel_mse_teacher_forced"),
        "mcd_db": mean("mcd_db"),
        "mcd_db_mean_mel": mean("mcd_db_mean_mel"),
        "stop_fired": float(np.mean([r["stop_fired"] for r in rows])),
        "stop_within_20pct": float(np.mean(within)),
        "length_ratio": float(np.mean([r["mel_frames_generated"] / r["mel_frames_true"] for r in rows])),
        "wer": float(wer.compute()),
        "wer_ground_truth": float(wer_gt.compute()),
        "train_minutes": minutes,
        "steps": steps,
    }


TARGETS: tuple[tuple[str, str, str, float], ...] = (
    ("mouth L1 / copy-reference", "mouth_l1", "mouth_l1_copy_reference", 0.8),
    ("mel MSE / mean-mel", "mel_mse", "mel_mse_mean_mel", 1.0),
    ("MCD / mean-mel's", "mcd_db", "mcd_db_mean_mel", 1.0),
)
"""(label, key, baseline key, highest passing ratio)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Learning curves and held-out targets on the demo corpus")
    parser.add_argument("--root", type=Path, default=Path("data/demo"))
    parser.add_argument("--out", type=Path, default=Path("outputs/learning"))
    parser.add_argument("--max-minutes", type=float, default=20.0, help="training budget (the issue's cap: 30)")
    parser.add_argument("--no-wer", action="store_true", help="skip the pocketsphinx transcription")
    parser.add_argument("--clips", type=int, default=None, help="score only the first N test clips (a quick check)")
    args, overrides = parser.parse_known_args(argv)  # the rest: fit flags, e.g. --trainer.max_steps=200
    args.overrides = overrides
    from datamodules.demo_corpus import ensure_demo_corpus
    from experiments.demo import train
    from metrics.asr import PocketSphinxRecognizer

    args.out.mkdir(parents=True, exist_ok=True)
    root = Path(ensure_demo_corpus(args.root))
    curve = LossCurve()
    started = time.perf_counter()
    cli = train(root, args.out, args.max_minutes, [*args.overrides, "--trainer.enable_progress_bar=false"],
                callbacks=[curve])
    minutes = (time.perf_counter() - started) / 60
    write_curves(curve.rows, args.out)
    module = cli.model.eval()
    rows = heldout(module, cli.datamodule, mean_mel(cli.datamodule), None if args.no_wer else PocketSphinxRecognizer(),
                   args.clips)
    with open(args.out / "heldout.csv", "w", newline="") as handle:
        fields = [k for k in rows[0] if not isinstance(rows[0][k], list)]
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(rows, minutes, int(cli.trainer.global_step))
    summary["overrides"] = args.overrides
    strict = {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in summary.items()}
    (args.out / "heldout.json").write_text(json.dumps(strict, indent=2, allow_nan=False) + "\n")  # NaN -> null
    _report(curve.rows, summary, args.out)
    return 0


def _report(curve: list[dict], summary: dict, out: Path) -> None:
    first, last = curve[: max(1, len(curve) // 10)], curve[-max(1, len(curve) // 10):]
    print(f"trained {summary['steps']} steps in {summary['train_minutes']:.1f} min; curves: {out / 'loss_curves.png'}")
    print(f"{'term':>10} {'first 10%':>10} {'last 10%':>10} {'ratio':>7}")
    for term in TERMS:
        a, b = np.nanmean([r[term] for r in first]), np.nanmean([r[term] for r in last])
        print(f"{term:>10} {a:10.4f} {b:10.4f} {b / a if a else float('nan'):7.3f}")
    print(f"held-out test clips (unseen speakers, free running): {summary['clips']}")
    for label, key, base, limit in TARGETS:
        ratio = summary[key] / summary[base]
        print(f"  {label:28s} {summary[key]:8.4f} / {summary[base]:8.4f} = {ratio:6.3f}  "
              f"target <= {limit}: {'met' if ratio <= limit else 'MISSED'}")
    for label, key, limit in (("sync corr, own speech", "sync_corr_speech", 0.5),
                              ("sync corr, ground truth", "sync_corr_gt", 0.4)):
        print(f"  {label:28s} {summary[key]:8.3f}  target >= {limit}: {'met' if summary[key] >= limit else 'MISSED'}")
    print(f"  {'stop within +-20%':28s} {summary['stop_within_20pct']:8.2f}  target >= 0.8: "
          f"{'met' if summary['stop_within_20pct'] >= 0.8 else 'MISSED'} (fired on {summary['stop_fired']:.0%}, "
          f"length ratio {summary['length_ratio']:.2f})")
    print(f"  {'WER (pocketsphinx)':28s} {summary['wer']:8.3f}  ground truth {summary['wer_ground_truth']:.3f}")
    print(f"  diagnostics: teacher-forced mel MSE {summary['mel_mse_teacher_forced']:.3f}; mouth opening mean "
          f"{summary['mouth_opening_mean']:.2f} px (ground truth {summary['mouth_opening_mean_ground_truth']:.2f}); "
          f"ground truth's own sync corr {summary['sync_corr_ground_truth_speech']:.3f}")
    print(f"figures: {out / 'heldout.json'}")


if __name__ == "__main__":
    raise SystemExit(main())
