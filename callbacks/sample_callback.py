"""Render generated talking-face samples into TensorBoard during training.

Every ``every_n_epochs`` validation epochs, :class:`SampleCallback` asks for speech and video
generated from the conditioning of the first rows of the first validation batch (the validation
step generates them: :mod:`lightning_modules.generation_requests`, which works under DDP and
FSDP alike) and logs, per sample: the video as an animated image, the speech as audio, the
generated and ground-truth mel spectrograms as one matplotlib figure, and (optionally) an mp4
with the speech muxed in, written beside the TensorBoard event files. Generation runs under a
forked RNG with a fixed seed: the samples of successive epochs share their noise, and training
draws the same random numbers whether the callback is on or off (resumed runs stay exact).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from callbacks.distributed import requested_output, want_generation
from datamodules.conventions import FPS, MEL_FRAMES_PER_SECOND, SAMPLE_RATE

log = logging.getLogger(__name__)


class SampleCallback(Callback):
    """Log generated video, its audio and mel spectrograms to TensorBoard.

    Args:
        every_n_epochs: log after every n-th validation epoch (1 = every one).
        max_samples: how many rows of the first validation batch to render.
        seed: seed of the generation noise (the same for every epoch).
        write_mp4: also write ``<log_dir>/samples/epoch=E-<key>.mp4`` with the speech muxed in
            (TensorBoard cannot play video with sound).

    Raises:
        ValueError: ``every_n_epochs`` or ``max_samples`` below 1.
    """

    def __init__(self, every_n_epochs: int = 1, max_samples: int = 2, seed: int = 0, write_mp4: bool = True) -> None:
        if every_n_epochs < 1 or max_samples < 1:
            raise ValueError(f"every_n_epochs and max_samples must be >= 1, got {every_n_epochs}, {max_samples}")
        self.every_n_epochs, self.max_samples = every_n_epochs, max_samples
        self.seed, self.write_mp4 = seed, write_mp4
        self.name = f"samples@{id(self):x}"
        self._warned = False

    def on_validation_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        """On a due epoch, ask for the first rows of the first validation batch (rank zero's rows; the
        other ranks join only where the strategy shards the weights)."""
        due = (trainer.current_epoch + 1) % self.every_n_epochs == 0
        if batch_idx == 0 and dataloader_idx == 0 and due and want_generation(self, trainer, pl_module):
            pl_module.request_generation(self.name, self.max_samples, self.seed)

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Log what the validation step generated for this callback (rank zero only)."""
        served = requested_output(outputs, self.name)
        if served is not None and trainer.is_global_zero:
            self.log_samples(trainer, served["batch"], served["output"])

    def log_samples(self, trainer: Trainer, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> list[Path]:
        """Write ``out`` (from ``generate_batch``) to every TensorBoard logger; returns the mp4 paths."""
        written: list[Path] = []
        step = trainer.global_step
        for logger in trainer.loggers:
            if not isinstance(logger, TensorBoardLogger):
                continue
            writer = logger.experiment
            for row, key in enumerate(batch["key"]):
                tag = f"samples/{key}"
                video = _to_uint8(out["video"][row])  # (T, H, W, 3)
                wav = _trim(out["wav"][row], out.get("wav_lengths"), row)  # (S,)
                _add_gif(writer, f"{tag}/video", video, step)
                writer.add_audio(f"{tag}/speech", torch.from_numpy(wav)[None], step, sample_rate=SAMPLE_RATE)
                writer.add_figure(f"{tag}/mel", _mel_figure(out, batch, row), step, close=True)
                if self.write_mp4:
                    written.append(_write_sample(Path(logger.log_dir), trainer.current_epoch, key, video, wav))
        return written


def _to_uint8(video: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) float in [0, 1] -> (T, H, W, 3) uint8."""
    return (video.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _trim(wav: torch.Tensor, lengths: Optional[torch.Tensor], row: int) -> np.ndarray:
    """The valid samples of one generated waveform as float32 numpy."""
    end = int(lengths[row]) if lengths is not None else wav.shape[-1]
    return wav[:end].float().cpu().numpy()


def _add_gif(writer: Any, tag: str, video: np.ndarray, step: int) -> None:
    """Log (T, H, W, 3) uint8 frames as an animated GIF image summary (what TensorBoard plays as video)."""
    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    frames = [Image.fromarray(frame) for frame in video]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / FPS), loop=0)
    height, width = video.shape[1:3]
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=buffer.getvalue())
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def _mel_figure(out: dict[str, torch.Tensor], batch: dict[str, Any], row: int) -> Any:
    """Generated (top) and ground-truth (bottom) log-mel spectrograms of one sample."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("generated", out["mel"][row], out.get("mel_lengths"))]
    if "mel" in batch:
        panels.append(("ground truth", batch["mel"][row], batch.get("mel_lengths")))
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.2 * len(panels)), squeeze=False)
    for ax, (title, mel, lengths) in zip(axes[:, 0], panels):
        end = int(lengths[row]) if lengths is not None else mel.shape[-1]
        mel = mel[:, :end].float().cpu().numpy()  # (80, T)
        ax.imshow(mel, origin="lower", aspect="auto", extent=(0, end / MEL_FRAMES_PER_SECOND, 0, mel.shape[0]))
        ax.set_title(title)
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    return fig


def _write_sample(log_dir: Path, epoch: int, key: str, video: np.ndarray, wav: np.ndarray) -> Path:
    """Mux one sample into ``<log_dir>/samples/epoch=E-<key>.mp4`` (even size for H.264)."""
    from datamodules.media import write_mp4

    height, width = video.shape[1:3]
    video = video[:, : height - height % 2, : width - width % 2]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
    return write_mp4(log_dir / "samples" / f"epoch={epoch}-{safe}.mp4", video, fps=FPS, audio=wav)
