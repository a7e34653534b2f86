"""Does the tiny NFY model learn on the demo corpus? Loss curves and held-out baselines.

Trains ``ete.yaml`` + ``tiny.yaml`` on the demo corpus (CPU) and writes, under ``--out``:

* ``loss_curves.csv``: one row per training step, every loss term (unweighted) and the total;
* ``loss_curves.png``: one panel per term, raw and smoothed;
* ``heldout.csv``: per test-split clip, the two comparisons below.

On the held-out (test-split, unseen speakers) clips it compares, with the model generating
freely (no teacher forcing):

* mouth-region L1 (lip mask, pixels in [0, 1]) of the generated frames against the ground-truth
  frames, next to the "copy the reference frame" baseline (a still face);
* mel MSE of the generated speech against the ground truth (over the shorter of the two
  lengths), next to the "mean mel" baseline (the per-bin mean of the training mels).

The figures are printed whichever way they fall; the model beats a baseline when its number is
lower. Next to them, diagnostics that locate a gap: the VAE's own reconstruction of the ground
truth and the network's output for the exact latents (the best it can do through its VAE), the
teacher-forced one-step x0 estimate, the teacher-forced mel MSE (free running minus it is the
exposure-bias drift) and on how many clips the stop head fired. Only the scored frames are
generated.

Usage: ``python benchmarks/learning.py [--root data/demo] [--out outputs/learning] [--max-minutes 8]``
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repo root

from lightning_modules.nfy_module import LOSS_TERMS

TERMS: tuple[str, ...] = (*LOSS_TERMS, "loss")


class LossCurve(Callback):
    """Records every training step's loss terms (``NFYLitModule.training_step`` returns them)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.rows.append({"step": float(trainer.global_step), **{term: float(outputs[term]) for term in TERMS}})


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


@torch.no_grad()
def heldout(module: Any, datamodule: Any, mel_mean: torch.Tensor) -> list[dict[str, Any]]:
    """Per test clip: mouth L1 (model, copy-reference) and mel MSE (model, mean mel), with diagnostics.

    The diagnostics split each gap into its causes: ``mouth_l1_vae`` is the VAE's own
    reconstruction of the ground truth, ``mouth_l1_bound`` what the network outputs when its
    denoiser predicts the true latents exactly (the best it can do through its VAE),
    ``mouth_l1_one_step`` the teacher-forced one-step x0 estimate at a random timestep (the
    training loss's view) and ``mel_mse_teacher_forced`` the decoder fed the true previous mel
    frames (free running adds the exposure-bias drift on top).
    """
    rows = []
    net = module.net
    context = int(net.motion_frames)
    for batch in datamodule.test_dataloader():
        out = module.generate_batch(batch, max_frames=batch["video"].shape[1] - context)  # the frames scored
        forced = module(batch)  # the training objective's teacher-forced pass, eval mode (no guidance dropout)
        truth = batch["video"][:, context:]  # (B, F, 3, H, W) in [-1, 1]
        target = (truth + 1) / 2  # (B, F, 3, H, W) in [0, 1]
        frames = min(target.shape[1], out["video"].shape[1])
        lip = batch["lip_mask"][:, None]  # (B, 1, 1, H, W)
        reference = ((batch["ref_image"] + 1) / 2)[:, None]  # (B, 1, 3, H, W)
        flat = truth.flatten(0, 1)  # (B F, 3, H, W)
        vae = net.appearance_encoder.decode(net.appearance_encoder.encode(flat)).unflatten(0, truth.shape[:2])
        bound = net.reconstruct(truth, batch["ref_image"]) if hasattr(net, "reconstruct") else vae
        unit = {"vae": vae, "bound": bound, "one_step": forced["pred_frames"]}
        unit = {name: ((value.clamp(-1, 1) + 1) / 2) for name, value in unit.items()}  # (B, F, 3, H, W)
        for row in range(target.shape[0]):
            length = int(batch["mel_lengths"][row])
            rows.append({
                "key": batch["key"][row],
                "mouth_l1_model": _masked_l1(out["video"][row, :frames], target[row, :frames], lip[row]),
                "mouth_l1_copy_reference": _masked_l1(reference[row].expand(frames, -1, -1, -1),
                                                      target[row, :frames], lip[row]),
                **{f"mouth_l1_{name}": _masked_l1(value[row], target[row], lip[row]) for name, value in unit.items()},
                **_mel_errors(out["mel"][row], int(out["mel_lengths"][row]), batch["mel"][row], length, mel_mean,
                              int(module.hparams.max_mel_frames)),
                "mel_mse_teacher_forced": float(((forced["pred_mel"][row, :, :length]
                                                  - batch["mel"][row, :, :length]) ** 2).mean()),
            })
    return rows


def _masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean |pred - target| over the pixels where ``mask`` (1, 1, H, W) is 1, all frames."""
    weight = mask.expand_as(target)
    return float(((pred - target).abs() * weight).sum() / weight.sum().clamp(min=1))


def _mel_errors(gen: torch.Tensor, gen_len: int, true: torch.Tensor, true_len: int, mel_mean: torch.Tensor,
                cap: int) -> dict:
    frames = max(1, min(gen_len, true_len))
    truth = true[:, :frames]  # (80, T)
    return {
        "mel_mse_model": float(((gen[:, :frames] - truth) ** 2).mean()),
        "mel_mse_mean_mel": float(((mel_mean[:, None] - truth) ** 2).mean()),
        "mel_frames_generated": gen_len,
        "mel_frames_true": true_len,
        "mel_frames_cap": cap,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Learning curves and held-out baselines on the demo corpus")
    parser.add_argument("--root", type=Path, default=Path("data/demo"))
    parser.add_argument("--out", type=Path, default=Path("outputs/learning"))
    parser.add_argument("--max-minutes", type=float, default=8.0)
    parser.add_argument("overrides", nargs="*", help="extra fit flags, e.g. --trainer.max_steps=200")
    args = parser.parse_args(argv)
    from datamodules.demo_corpus import ensure_demo_corpus
    from experiments.demo import train

    torch.set_num_threads(max(1, torch.get_num_threads()))
    args.out.mkdir(parents=True, exist_ok=True)
    root = Path(ensure_demo_corpus(args.root))
    curve = LossCurve()
    started = time.perf_counter()
    cli = train(root, args.out, args.max_minutes, [*args.overrides, "--trainer.enable_progress_bar=false"],
                callbacks=[curve])
    minutes = (time.perf_counter() - started) / 60
    write_curves(curve.rows, args.out)
    module = cli.model.eval()
    rows = heldout(module, cli.datamodule, mean_mel(cli.datamodule))
    with open(args.out / "heldout.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _report(curve.rows, rows, minutes, args.out)
    return 0


def _report(curve: list[dict], rows: list[dict], minutes: float, out: Path) -> None:
    first, last = curve[: max(1, len(curve) // 10)], curve[-max(1, len(curve) // 10):]
    print(f"trained {len(curve)} steps in {minutes:.1f} min; curves: {out / 'loss_curves.png'}, {out / 'loss_curves.csv'}")
    print(f"{'term':>10} {'first 10%':>10} {'last 10%':>10} {'ratio':>7}")
    for term in TERMS:
        a, b = np.nanmean([r[term] for r in first]), np.nanmean([r[term] for r in last])
        print(f"{term:>10} {a:10.4f} {b:10.4f} {b / a if a else float('nan'):7.3f}")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "key"}
    print(f"held-out test clips: {len(rows)}")
    print(f"  mouth-region L1   model {mean['mouth_l1_model']:.4f}  copy-reference {mean['mouth_l1_copy_reference']:.4f}"
          f"  ratio {mean['mouth_l1_model'] / mean['mouth_l1_copy_reference']:.3f}")
    print(f"  mel MSE           model {mean['mel_mse_model']:.4f}  mean-mel {mean['mel_mse_mean_mel']:.4f}"
          f"  ratio {mean['mel_mse_model'] / mean['mel_mse_mean_mel']:.3f}")
    print(f"  mouth L1 diagnostics: VAE reconstruction {mean['mouth_l1_vae']:.4f}, network bound (exact latents) "
          f"{mean['mouth_l1_bound']:.4f}, one-step x0 (teacher forced) {mean['mouth_l1_one_step']:.4f}")
    print(f"  mel MSE teacher forced {mean['mel_mse_teacher_forced']:.4f} (free running {mean['mel_mse_model']:.4f})")
    print(f"  stop head fired on {sum(r['mel_frames_generated'] < r['mel_frames_cap'] for r in rows)}/{len(rows)} clips")
    print(f"  mel frames        generated {mean['mel_frames_generated']:.0f}  true {mean['mel_frames_true']:.0f}")


if __name__ == "__main__":
    raise SystemExit(main())
