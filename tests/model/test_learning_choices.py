"""Training choices that make the tiny model learn in minutes: the reference residual with x0
prediction, the clean last DDIM step, the stop head's positive weight, the pre-net dropout and the
standardised mel units of the speech decoder. Each is checked against a direct computation."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.diffusion import sampling_scheduler, training_scheduler
from lightning_modules.networks import AudioDecoder
from lightning_modules.networks.speech_decoder import MEL_MEAN, MEL_STD
from tests.model.test_networks import MOTION, batch, conditions, tiny_net

RESIDUAL = {"reference_residual": True, "prediction_type": "sample"}


def test_untrained_residual_network_predicts_the_reference_exactly() -> None:
    net = tiny_net(seed=0, **RESIDUAL)
    assert not net.video_denoiser.unet.conv_out.weight.any()  # zero output layer: no change predicted
    b = batch()
    out = net(b)
    target = b["video"][:, MOTION:]  # (B, F, 3, H, W)
    reference = b["ref_image"][:, None].expand_as(target)
    # one-step x0 = zero change -> the reference photo itself, whatever the VAE reconstructs
    torch.testing.assert_close(out["pred_frames"], reference.clamp(-1, 1), atol=1e-4, rtol=0)
    torch.testing.assert_close(out["video_l1"], (reference - target).abs().mean(), atol=1e-4, rtol=0)
    # x0 prediction of the latent change: the denoising loss is the change's mean square
    with torch.no_grad():
        latents = net._encode_frames(target)  # (B, 4, F, h, w)
        change = latents - net.appearance_encoder.encode(b["ref_image"])[:, :, None]
    torch.testing.assert_close(out["denoise"], (change**2).mean(), atol=1e-6, rtol=1e-4)
    # free sampling ends on the predicted x0 (no noise re-added): the photo again
    net.eval()
    speech = net.generate_speech(*conditions(b), max_mel_frames=3)
    frames = net.generate_video(b["ref_image"], b["face_mask"], b["lip_mask"], b["text_ids"], b["text_mask"],
                                b["profile_wav"], speech["audio_hidden"], num_frames=4, num_inference_steps=3,
                                generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(frames, b["ref_image"][:, None].expand_as(frames).clamp(-1, 1), atol=1e-4, rtol=0)


def test_reconstruct_cancels_the_vae_error_of_the_reference() -> None:
    b = batch()
    still = b["ref_image"][:, None].expand(-1, 3, -1, -1, -1)  # (B, 3, 3, H, W) frames equal to the photo
    plain, residual = tiny_net(seed=0), tiny_net(seed=0, **RESIDUAL)
    with torch.no_grad():
        through_vae = plain.reconstruct(still, b["ref_image"])
        vae = plain.appearance_encoder
        direct = vae.decode(vae.encode(b["ref_image"]))[:, None].expand_as(still)
        torch.testing.assert_close(through_vae, direct)  # without the residual: the VAE's reconstruction
        assert (through_vae - still).abs().mean() > 0.1  # which a random VAE gets badly wrong
        torch.testing.assert_close(residual.reconstruct(still, b["ref_image"]), still, atol=1e-4, rtol=0)


def test_sample_prediction_steps_and_the_clean_last_step() -> None:
    train = training_scheduler(100, "sample")
    sampler = sampling_scheduler(train)
    assert sampler.config.prediction_type == "sample" and sampler.config.set_alpha_to_one
    sampler.set_timesteps(4)
    x0 = torch.randn(1, 4, 2, 3, 3)
    latents = torch.randn_like(x0)
    for t in sampler.timesteps:
        latents = sampler.step(x0, t, latents).prev_sample
    torch.testing.assert_close(latents, x0)  # a perfect x0 predictor ends exactly on x0
    with pytest.raises(ValueError, match="prediction_type"):
        training_scheduler(100, "flow")


def test_stop_loss_weights_the_last_frame() -> None:
    b = batch()
    logits = {}

    def keep(module, args, output) -> None:
        logits["stop"] = output.squeeze(-1)

    for weight in (1.0, 7.0):
        net = tiny_net(seed=0, stop_pos_weight=weight).eval()
        handle = net.audio_decoder.stop_head.register_forward_hook(keep)
        stop = net(b)["stop"]
        handle.remove()
        x = logits["stop"]  # (B, T) stop logits of the mel frames
        lengths = b["mel_lengths"]
        frames = torch.arange(x.shape[1])[None]
        last = (frames == lengths[:, None] - 1).float()
        valid = (frames < lengths[:, None]).float()
        p = torch.sigmoid(x)
        bce = -(weight * last * torch.log(p) + (1 - last) * torch.log(1 - p))
        torch.testing.assert_close(stop, (bce * valid).sum() / valid.sum(), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="stop_pos_weight"):
        tiny_net(seed=0, stop_pos_weight=0.0)


def test_prenet_dropout_only_in_training_and_standardised_mel_units() -> None:
    torch.manual_seed(0)
    decoder = AudioDecoder(dim=16, width=16, layers=1, heads=2, max_positions=64, cross_attention=False,
                           prenet_dropout=0.5)
    prefix, mask = torch.randn(2, 3, 16), torch.ones(2, 3, dtype=torch.bool)
    mel = torch.randn(2, 80, 6) * 2 - 5
    decoder.train()
    assert not torch.allclose(decoder(prefix, mask, mel)["mel"], decoder(prefix, mask, mel)["mel"])
    decoder.eval()
    torch.testing.assert_close(decoder(prefix, mask, mel)["mel"], decoder(prefix, mask, mel)["mel"])
    with torch.no_grad():  # a zero head predicts the standardisation's mean frame
        decoder.mel_head.weight.zero_()
        decoder.mel_head.bias.fill_(1.0)
    torch.testing.assert_close(decoder(prefix, mask, mel)["mel"], torch.full((2, 80, 6), MEL_MEAN + MEL_STD))
    with pytest.raises(ValueError, match="prenet_dropout"):
        AudioDecoder(dim=16, width=16, prenet_dropout=1.0)
