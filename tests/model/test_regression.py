"""Regression slices of the tiny NFY network: a seeded 2-step AdamW training run and 2-step sampling.

The stored numbers were produced once from this code (``python -m tests.model.test_regression`` prints
them) and guard against unintended changes of the computation: initialisation, conditioning flow,
losses, the DDPM/DDIM schedules, the cached speech decoding. A deliberate change of the model
re-generates them with the same command (and says why in its commit). Tolerance 1e-3.
"""

from __future__ import annotations

import torch

from tests.model.test_networks import batch, conditions, objective, pipeline, tiny_net

ATOL = 1e-3

EXPECTED_LOSSES: list[list[float]] = [
    [0.560873, 3.834158, 1.108841, 1.033743],
    [0.559762, 3.741373, 1.00206, 0.894956],
]
"""Per training step: video_l1, audio_mse, denoise, stop."""
EXPECTED_WEIGHTS: list[float] = [
    0.039208, 0.073791, -0.228883, -0.134413, 0.038405, 0.060699,
    0.01581,
]
"""``audio_decoder.mel_head.weight[0, :4]`` and ``video_denoiser.unet.conv_out.weight[0, 0, 0]`` after 2 steps."""
EXPECTED_MEL: list[float] = [
    -5.238504, -1.391706, -4.93708, -6.888996, -3.388665, -1.384328,
    -3.93408, -3.628504, -2.622247, -3.631617, -2.678644, -1.775711,
]
"""``NFYPipeline.speech`` mel[0, :4, :3] (flattened), stop head disabled."""
EXPECTED_FRAMES: list[float] = [
    -0.014865, 0.172737, -0.030638, -0.384391, 0.146615, 0.067903,
]
"""``NFYPipeline.video_window`` (2 DDIM steps, guidance 2) frame 0, channel 0, row 16, columns 0..5 of clip 0."""


def run_training() -> tuple[list[list[float]], list[float]]:
    """Two AdamW steps (lr 1e-3) on one synthetic batch from seed 0."""
    net = tiny_net(seed=0)
    module = objective(net)
    b = batch()
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3, weight_decay=1e-2)
    torch.manual_seed(0)
    losses = []
    for _ in range(2):
        out = module(b)
        terms = [out[k] for k in ("video_l1", "audio_mse", "denoise", "stop")]
        losses.append([float(t.detach()) for t in terms])
        optimizer.zero_grad()
        (terms[0] + 0.1 * terms[1] + terms[2] + terms[3]).backward()
        optimizer.step()
    weights = net.audio_decoder.mel_head.weight[0, :4].tolist() + net.video_denoiser.unet.conv_out.weight[0, 0, 0].tolist()
    return losses, weights


def run_sampling() -> tuple[list[float], list[float]]:
    """Speech (3 frames, no stop) then one 4-frame video window in 2 DDIM steps, from seed 0."""
    net = tiny_net(seed=0).eval()
    b = batch()
    with torch.no_grad():
        net.audio_decoder.stop_head.bias.fill_(-50.0)
    sampler = pipeline(net)
    speech = sampler.speech(*conditions(b), max_mel_frames=3)
    frames = sampler.video_window(
        b["ref_image"], b["face_mask"], b["lip_mask"], b["text_ids"], b["text_mask"], b["profile_wav"],
        speech["audio_hidden"], num_frames=4, motion_frames=None, num_inference_steps=2, guidance_scale=2.0,
        generator=torch.Generator().manual_seed(0),
    )
    return speech["mel"][0, :4, :3].flatten().tolist(), frames[0, 0, 0, 16, :6].tolist()


def test_two_training_steps_match_the_stored_numbers() -> None:
    losses, weights = run_training()
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(EXPECTED_LOSSES), atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.tensor(weights), torch.tensor(EXPECTED_WEIGHTS), atol=ATOL, rtol=0)
    assert losses[1] != losses[0]  # the step changed the network


def test_two_step_sampling_matches_the_stored_numbers() -> None:
    mel, frames = run_sampling()
    torch.testing.assert_close(torch.tensor(mel), torch.tensor(EXPECTED_MEL), atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.tensor(frames), torch.tensor(EXPECTED_FRAMES), atol=ATOL, rtol=0)


if __name__ == "__main__":
    torch.set_num_threads(1)
    training, sampling = run_training(), run_sampling()
    print("EXPECTED_LOSSES =", [[round(v, 6) for v in step] for step in training[0]])
    print("EXPECTED_WEIGHTS =", [round(v, 6) for v in training[1]])
    print("EXPECTED_MEL =", [round(v, 6) for v in sampling[0]])
    print("EXPECTED_FRAMES =", [round(v, 6) for v in sampling[1]])
