"""Training choices that make the tiny model learn in minutes: the reference residual with x0
prediction, the clean last DDIM step, the stop head's positive weight, the pre-net dropout and the
standardised mel units of the speech decoder. Each is checked against a direct computation."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.diffusion import sampling_scheduler, training_scheduler
from lightning_modules.networks import AudioDecoder
from lightning_modules.networks.speech_decoder import MEL_MEAN, MEL_STD, MIN_MEL_STD
from tests.model.test_networks import (
    FRAMES,
    MOTION,
    VOCAB,
    batch,
    conditions,
    losses,
    pipeline,
    tiny_net,
)

RESIDUAL = {"reference_residual": True}
"""The network side of the reference residual; it is trained with x0 prediction (:data:`X0`)."""
X0 = "sample"


def test_untrained_residual_network_predicts_the_reference_exactly() -> None:
    net = tiny_net(seed=0, **RESIDUAL)
    assert not net.video_denoiser.unet.conv_out.weight.any()  # zero output layer: no change predicted
    b = batch()
    out = losses(net, b, train_scheduler=training_scheduler(prediction_type=X0))
    target = b["video"][:, MOTION:]  # (B, F, 3, H, W)
    reference = b["ref_image"][:, None].expand_as(target)
    # one-step x0 = zero change -> the reference photo itself, whatever the VAE reconstructs
    torch.testing.assert_close(out["pred_frames"], reference.clamp(-1, 1), atol=1e-4, rtol=0)
    torch.testing.assert_close(out["video_l1"], (reference - target).abs().mean(), atol=1e-4, rtol=0)
    # x0 prediction of the latent change: the denoising loss is the change's mean square
    with torch.no_grad():
        latents = net.encode_frames(target)  # (B, 4, F, h, w)
        change = latents - net.appearance_encoder.encode(b["ref_image"])[:, :, None]
    torch.testing.assert_close(out["denoise"], (change**2).mean(), atol=1e-6, rtol=1e-4)
    # free sampling ends on the predicted x0 (no noise re-added): the photo again
    net.eval()
    sampler = pipeline(net, prediction_type=X0)
    speech = sampler.speech(*conditions(b), max_mel_frames=3)
    frames = sampler.video_window(b["ref_image"], b["face_mask"], b["lip_mask"], b["text_ids"], b["text_mask"],
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
        net = tiny_net(seed=0).eval()
        handle = net.audio_decoder.stop_head.register_forward_hook(keep)
        stop = losses(net, b, stop_pos_weight=weight)["stop"]
        handle.remove()
        x = logits["stop"]  # (B, T) stop logits of the mel frames
        lengths = b["mel_lengths"]
        frames = torch.arange(x.shape[1])[None]
        last = (frames == lengths[:, None] - 1).float()
        valid = (frames < lengths[:, None]).float()
        p = torch.sigmoid(x)
        bce = -(weight * last * torch.log(p) + (1 - last) * torch.log(1 - p))
        torch.testing.assert_close(stop, (bce * valid).sum() / valid.sum(), atol=1e-5, rtol=1e-5)


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


def test_per_bin_mel_statistics_standardise_the_decoder() -> None:
    torch.manual_seed(0)
    decoder = AudioDecoder(dim=16, width=16, layers=1, heads=2, max_positions=64, cross_attention=False).eval()
    assert not decoder.mel_statistics_set
    mean, std = torch.linspace(-9.0, -2.0, 80), torch.linspace(0.0, 3.0, 80)
    decoder.set_mel_statistics(mean, std)
    assert decoder.mel_statistics_set and float(decoder.mel_std.min()) == pytest.approx(MIN_MEL_STD)
    with torch.no_grad():
        decoder.mel_head.weight.zero_()
        decoder.mel_head.bias.fill_(-1.0)
    out = decoder(torch.randn(1, 3, 16), torch.ones(1, 3, dtype=torch.bool), torch.randn(1, 80, 5))["mel"]
    torch.testing.assert_close(out, (mean - std.clamp(min=MIN_MEL_STD))[None, :, None].expand(1, 80, 5))
    assert set(decoder.state_dict()) >= {"mel_mean", "mel_std", "mel_statistics_set"}  # kept in checkpoints
    with pytest.raises(ValueError, match="shape"):
        decoder.set_mel_statistics(mean[:10], std[:10])


def test_fit_start_estimates_the_mel_statistics_once() -> None:
    from lightning.pytorch import Trainer

    from lightning_modules import NFYLitModule
    from tests.model.fixtures import SyntheticDataModule, synthetic_sample

    data = SyntheticDataModule(vocab_size=VOCAB, image_size=32, num_samples=6, batch_size=2)
    module = NFYLitModule(tiny_net(seed=0), mel_statistics_batches=3)  # 3 batches: all 6 clips
    trainer = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, max_steps=1, limit_val_batches=0)
    trainer.fit(module, datamodule=data)
    frames = torch.cat([synthetic_sample(i, VOCAB, 32, FRAMES + MOTION)["mel"] for i in range(6)], dim=1).double()
    decoder = module.net.audio_decoder
    assert decoder.mel_statistics_set
    torch.testing.assert_close(decoder.mel_mean, frames.mean(1).float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(decoder.mel_std, frames.std(1, correction=0).float(), atol=1e-5, rtol=1e-5)
    decoder.mel_mean.fill_(3.0)
    module.on_fit_start()  # already set (a resumed run): left alone
    assert float(decoder.mel_mean.max()) == 3.0
    with pytest.raises(ValueError, match="mel_statistics_batches"):
        NFYLitModule(tiny_net(seed=0), mel_statistics_batches=-1)
