"""The NFY networks on the tiny configuration: shapes of every component, losses and gradients of the
training objective, speech stopping, video windows, offline loading errors and the paper's parameter counts.

The helpers at the top (synthetic batch, tiny network, its objective and pipeline) are shared with
test_ablations.py, test_learning_choices.py and test_regression.py.
"""

from __future__ import annotations

import math

import pytest
import torch

from datamodules.batch import MEL_PAD_VALUE, collate
from datamodules.conventions import PROFILE_SAMPLES
from lightning_modules.diffusion import sampling_scheduler, training_scheduler
from lightning_modules.networks import (
    AppearanceEncoder,
    AudioDecoder,
    AudioProfileEncoder,
    AudioSequenceEncoder,
    EntangledEncoder,
    NFYNetwork,
    PretrainedNotFoundError,
    StructureEncoder,
    TextEncoder,
    VideoDenoiser,
    Vocoder,
)
from lightning_modules.networks.layers import frame_windows
from lightning_modules.networks.presets import parameter_counts, preset
from lightning_modules.networks.vocoder import hifigan_generator
from lightning_modules.nfy_module import NFYLitModule
from lightning_modules.pipeline import NFYPipeline

VOCAB = 64
SIZE = 32  # image side of the tiny preset
FRAMES, MOTION = 4, 2


def sample(index: int, size: int = SIZE, frames: int = FRAMES + MOTION) -> dict:
    """One per-clip sample (about 0.5 s of audio), seeded by ``index``; lengths differ between indices."""
    g = torch.Generator().manual_seed(1000 + index)
    seconds = 0.4 + 0.1 * (index % 2)
    mask = torch.zeros(1, size, size)
    mask[:, size // 4 : -size // 4, size // 4 : -size // 4] = 1
    lip = torch.zeros(1, size, size)
    lip[:, size // 2 : 3 * size // 4, size // 4 : -size // 4] = 1
    return {
        "text_ids": torch.randint(1, VOCAB, (5 + index % 3,), generator=g),
        "ref_image": torch.rand(3, size, size, generator=g) * 2 - 1,
        "face_mask": mask, "lip_mask": lip,
        "profile_wav": torch.rand(PROFILE_SAMPLES, generator=g) * 0.2 - 0.1,
        "video": torch.rand(frames, 3, size, size, generator=g) * 2 - 1,
        "frame_start": index * 3 - 2,
        "wav": torch.rand(int(seconds * 16000), generator=g) * 0.2 - 0.1,
        "mel": torch.randn(80, int(seconds * 62.5), generator=g) - 4,
        "key": f"clip{index}", "speaker": f"spk{index % 2}", "dataset": "synthetic",
    }


def batch(n: int = 2) -> dict:
    """A collated batch of ``n`` synthetic samples."""
    return collate([sample(i) for i in range(n)])


def tiny_net(seed: int = 0, **overrides) -> NFYNetwork:
    """The tiny preset, seeded."""
    torch.manual_seed(seed)
    return NFYNetwork(**preset("tiny", vocab_size=VOCAB, **overrides))


def objective(net: NFYNetwork, **kwargs) -> NFYLitModule:
    """The training objective around ``net`` (in ``net``'s mode); no guidance dropout unless asked
    (gradient checks need every path on)."""
    return NFYLitModule(net, **{"guidance_dropout": 0.0, **kwargs}).train(net.training)


def losses(net: NFYNetwork, b: dict, **kwargs) -> dict:
    """The unweighted loss terms of ``net`` on batch ``b`` (:meth:`NFYLitModule.forward`)."""
    return objective(net, **kwargs)(b)


def pipeline(net: NFYNetwork, prediction_type: str = "epsilon") -> NFYPipeline:
    """The sampling pipeline of ``net`` trained with the default schedule and ``prediction_type``."""
    return NFYPipeline.from_training_scheduler(net, training_scheduler(prediction_type=prediction_type))


def conditions(b: dict) -> tuple:
    """Positional conditioning arguments of :meth:`NFYPipeline.speech` from a batch."""
    return b["text_ids"], b["text_mask"], b["ref_image"], b["face_mask"], b["lip_mask"], b["profile_wav"]


def total_loss(out: dict) -> torch.Tensor:
    """Sum of the four unweighted loss terms."""
    return out["video_l1"] + out["audio_mse"] + out["denoise"] + out["stop"]


def params_without_grad(net: torch.nn.Module) -> list[str]:
    """Trainable parameters that received no (or an all-zero) gradient."""
    return [n for n, p in net.named_parameters()
            if p.requires_grad and (p.grad is None or not bool(p.grad.abs().sum() > 0))]


# ---------------------------------------------------------------------------------------- components
def test_text_encoder_shapes_and_length_check() -> None:
    enc = TextEncoder(VOCAB, 16, max_len=8)
    ids = torch.randint(0, VOCAB, (2, 7))
    assert enc(ids).shape == (2, 7, 16)
    with pytest.raises(ValueError, match="max_text_len=8"):
        enc(torch.randint(0, VOCAB, (2, 9)))


def test_audio_encoders_give_one_token_per_200_ms() -> None:
    wav = torch.rand(2, PROFILE_SAMPLES) * 0.2 - 0.1
    seq = AudioSequenceEncoder(16, channels=16, upsample_factors=(8, 8))
    prof = AudioProfileEncoder(16, hidden=16, layers=1, heads=2)
    assert seq(wav).shape == (2, 10, 16)
    assert prof(wav).shape == (2, 10, 16)
    # the convolutional feature encoder of Wav2Vec2 stays fixed; its transformer trains
    assert not any(p.requires_grad for p in prof.wav2vec.feature_extractor.parameters())
    assert all(p.requires_grad for p in prof.wav2vec.encoder.parameters())


def test_appearance_and_structure_encoders() -> None:
    vae = AppearanceEncoder(width=8, levels=2)
    images = torch.rand(3, 3, SIZE, SIZE) * 2 - 1
    latents = vae.encode(images)
    assert latents.shape == (3, 4, SIZE // 2, SIZE // 2) and vae.downsample == 2
    assert vae.decode(latents).shape == (3, 3, SIZE, SIZE)
    assert not any(p.requires_grad for p in vae.parameters())  # frozen by default
    vae.train()
    assert not vae.vae.training  # a frozen VAE stays in eval mode
    tuned = AppearanceEncoder(width=8, levels=2, trainable=True).eval()
    assert all(p.requires_grad for p in tuned.parameters())
    assert tuned.train().vae.training and not tuned.eval().vae.training  # a fine-tuned VAE follows its holder
    masks = torch.ones(2, 1, SIZE, SIZE)
    structure = StructureEncoder(16, downsample=2, patch=4, grid=SIZE // 2)
    assert structure.maps(masks, masks).shape == (2, 2, SIZE // 2, SIZE // 2)
    assert structure(masks, masks).shape == (2, (SIZE // 8) ** 2, 16)


def test_entangled_encoder_ignores_padded_tokens_and_checks_modality() -> None:
    enc = EntangledEncoder(16, layers=2, heads=2).eval()
    query, merged = torch.randn(2, 10, 16), torch.randn(2, 7, 16)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[:, 5:] = False
    out = enc(query, merged, mask)
    assert out.shape == (2, 10, 16)
    changed = merged.clone()
    changed[:, 5:] = 100.0  # padding: must not matter
    torch.testing.assert_close(enc(query, changed, mask), out)
    changed[:, 0] = 100.0  # a real token: must matter
    assert not torch.allclose(enc(query, changed, mask), out)
    shared = EntangledEncoder(16, num_modalities=2)
    assert not torch.allclose(shared(query, merged, modality=0), shared(query, merged, modality=1))
    with pytest.raises(ValueError, match="modality"):
        shared(query, merged)


def test_audio_decoder_shapes_and_cached_generation_matches_teacher_forcing() -> None:
    dec = AudioDecoder(16, width=16, layers=2, heads=2, max_positions=64).eval()
    prefix, video = torch.randn(2, 6, 16), torch.randn(2, 4, 16)
    prefix_mask = torch.ones(2, 6, dtype=torch.bool)
    prefix_mask[1, 4:] = False
    out = dec(prefix, prefix_mask, torch.randn(2, 80, 9), video)
    assert out["mel"].shape == (2, 80, 9) and out["stop_logits"].shape == (2, 9) and out["hidden"].shape == (2, 9, 16)
    with torch.no_grad():
        dec.stop_head.bias.fill_(-50.0)  # never stop: run to max_frames
    gen = dec.generate(prefix, prefix_mask, 7, video)
    assert gen["mel"].shape == (2, 80, 7) and gen["lengths"].tolist() == [7, 7]
    # the key/value cache must give what a full teacher-forced pass gives on the generated frames
    again = dec(prefix, prefix_mask, gen["mel"], video)
    torch.testing.assert_close(again["mel"], gen["mel"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(again["hidden"], gen["hidden"], atol=1e-4, rtol=1e-4)


def test_video_denoiser_gates_audio_tokens_by_the_lip_mask() -> None:
    den = VideoDenoiser(cond_channels=6, cross_dim=16, width=16, levels=2, heads=2).eval()
    sample_ = torch.randn(2, 10, FRAMES, 8, 8)
    ec, dc = torch.randn(2 * FRAMES, 3, 16), torch.randn(2 * FRAMES, 3, 16)
    gate = torch.zeros(2 * FRAMES, 1, 8, 8)
    out = den(sample_, torch.tensor([10, 500]), torch.cat([ec, dc], 1), 3, gate)
    assert out.shape == (2, 4, FRAMES, 8, 8)
    # closed lip gate: the audio (DC) tokens have no effect; the EC tokens do
    same = den(sample_, torch.tensor([10, 500]), torch.cat([ec, dc * 5], 1), 3, gate)
    torch.testing.assert_close(same, out)
    assert not torch.allclose(den(sample_, torch.tensor([10, 500]), torch.cat([ec * 5, dc], 1), 3, gate), out)
    gate[:, :, 4:] = 1.0  # open over the lower half: now they do
    assert not torch.allclose(den(sample_, torch.tensor([10, 500]), torch.cat([ec, dc * 5], 1), 3, gate),
                              den(sample_, torch.tensor([10, 500]), torch.cat([ec, dc], 1), 3, gate))


def test_frame_windows_take_2_5_mel_frames_per_video_frame() -> None:
    hidden = torch.arange(20, dtype=torch.float)[None, :, None].expand(2, 20, 1)  # state value = mel index
    out = frame_windows(hidden, torch.tensor([0, 5]), 4, lengths=torch.tensor([20, 9]))
    assert out.shape == (2, 4, 3, 1)
    assert out[0, :, :, 0].tolist() == [[0, 1, 2], [2, 3, 4], [5, 6, 7], [7, 8, 9]]
    assert out[1, :, :, 0].tolist() == [[5, 6, 7], [7, 8, 8], [8, 8, 8], [8, 8, 8]]  # past the end: last state


def test_vocoders_shapes_and_local_hifigan_weights(tmp_path) -> None:
    mel = torch.randn(2, 80, 12) - 5
    wav = Vocoder()(mel)  # Griffin-Lim
    assert wav.shape == (2, 12 * 256) and wav.abs().max() <= 1
    hifi = Vocoder(griffin_lim=False, channels=16)
    assert hifi(mel).shape == (2, 12 * 256)
    # aligned: samples 256 t .. belong to mel frame t, without the inference padding's lead
    padded = hifi.generator(torch.nn.functional.pad(mel, (5, 5), "replicate")).squeeze(1)  # (B, 256 (T + 10))
    torch.testing.assert_close(hifi(mel), padded[:, 5 * 256 : 17 * 256].clamp(-1, 1))
    # speechbrain's generator.ckpt layout in a local folder loads into the LibriTTS architecture
    torch.manual_seed(3)
    reference = hifigan_generator(512)
    torch.save(reference.state_dict(), tmp_path / "generator.ckpt")
    loaded = Vocoder(str(tmp_path))
    torch.testing.assert_close(loaded.generator.state_dict(), reference.state_dict())
    assert not any(p.requires_grad for p in loaded.parameters())


# ---------------------------------------------------------------------------------------- the network
def test_forward_returns_finite_losses_and_gradients_reach_every_trainable_part() -> None:
    net, b = tiny_net(), batch()
    out = losses(net, b)
    for name in ("video_l1", "audio_mse", "denoise", "stop"):
        assert out[name].dim() == 0 and torch.isfinite(out[name]), name
    assert out["pred_frames"].shape == (2, FRAMES, 3, SIZE, SIZE)
    assert out["pred_frames"].abs().max() <= 1
    assert out["pred_mel"].shape == b["mel"].shape
    total_loss(out).backward()
    assert params_without_grad(net) == []
    assert all(p.grad is None for p in net.appearance_encoder.parameters())  # frozen VAE


def test_each_loss_term_trains_its_own_parts() -> None:
    net, b = tiny_net(), batch()
    out = losses(net, b)
    out["audio_mse"].backward(retain_graph=True)
    assert net.audio_decoder.mel_head.weight.grad.abs().sum() > 0
    assert net.video_denoiser.unet.conv_in.weight.grad is None  # the mel loss does not reach the UNet
    net.zero_grad()
    out["denoise"].backward()
    assert net.video_denoiser.unet.conv_in.weight.grad.abs().sum() > 0
    assert net.audio_decoder.mel_head.weight.grad is None


def test_forward_rejects_a_window_without_frames() -> None:
    net, b = tiny_net(), batch()
    b["video"] = b["video"][:, :MOTION]
    with pytest.raises(ValueError, match="motion_frames=2"):
        losses(net, b)


@pytest.mark.parametrize("bias, frames", [(50.0, 1), (-50.0, 9)])
def test_speech_stops_when_the_stop_head_fires_or_at_max_frames(bias: float, frames: int) -> None:
    net, b = tiny_net().eval(), batch()
    with torch.no_grad():
        net.audio_decoder.stop_head.weight.zero_()
        net.audio_decoder.stop_head.bias.fill_(bias)
    out = pipeline(net).speech(*conditions(b), max_mel_frames=9)
    assert out["mel"].shape == (2, 80, frames) and out["mel_lengths"].tolist() == [frames, frames]
    assert out["wav"].shape == (2, frames * 256) and out["wav_lengths"].tolist() == [frames * 256] * 2
    assert out["audio_hidden"].shape == (2, frames, 16)


def test_speech_pads_rows_that_stopped_early() -> None:
    net, b = tiny_net().eval(), batch()
    calls = {"n": 0}

    def stop_first_row_at_step_3(module, args, output):  # stop logits: row 0 fires at its 3rd frame
        calls["n"] += 1
        logits = torch.full_like(output, -50.0)
        if calls["n"] == 3:
            logits[0] = 50.0
        return logits

    net.audio_decoder.stop_head.register_forward_hook(stop_first_row_at_step_3)
    out = pipeline(net).speech(*conditions(b), max_mel_frames=6)
    assert out["mel_lengths"].tolist() == [3, 6] and out["mel"].shape == (2, 80, 6)
    assert bool((out["mel"][0, :, 3:] == MEL_PAD_VALUE).all()) and bool((out["mel"][1] != MEL_PAD_VALUE).all())
    assert bool((out["wav"][0, 3 * 256 :] == 0).all())


def test_video_window_shapes_seed_and_motion_context() -> None:
    net, b = tiny_net().eval(), batch()
    sampler = pipeline(net)
    hidden = torch.randn(2, math.ceil(2.5 * FRAMES), 16)
    args = (b["ref_image"], b["face_mask"], b["lip_mask"], b["text_ids"], b["text_mask"], b["profile_wav"], hidden)
    first = sampler.video_window(*args, num_frames=FRAMES, motion_frames=None, num_inference_steps=2,
                               generator=torch.Generator().manual_seed(1))
    assert first.shape == (2, FRAMES, 3, SIZE, SIZE) and first.abs().max() <= 1
    again = sampler.video_window(*args, num_frames=FRAMES, motion_frames=None, num_inference_steps=2,
                               generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(again, first)
    follow = sampler.video_window(*args, num_frames=FRAMES, motion_frames=first[:, -MOTION:], num_inference_steps=2,
                                guidance_scale=3.0, generator=torch.Generator().manual_seed(1))
    assert follow.shape == first.shape and not torch.allclose(follow, first)


def test_schedulers_share_the_noise_schedule() -> None:
    train = training_scheduler(100, "v_prediction")
    sample = sampling_scheduler(train)
    torch.testing.assert_close(sample.alphas_cumprod, train.alphas_cumprod)
    assert sample.config.prediction_type == "v_prediction" and not train.config.clip_sample
    with pytest.raises(ValueError, match="prediction_type"):
        training_scheduler(prediction_type="sample_x")


@pytest.mark.parametrize("kwargs, match", [
    ({"entanglement": "both"}, "entanglement"), ({"attended_tokens": "all"}, "attended_tokens"),
    ({"image_size": 36}, "image_size=36"), ({"unet": "/x"}, "pretrained_motion_adapter"),
])
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny_net(**kwargs)


# ---------------------------------------------------------------------------------------- pretrained parts
@pytest.mark.parametrize("kwargs", [
    {"wav2vec": "{missing}"}, {"vae": "{missing}"}, {"gpt2": "{missing}"},
    {"unet": "{missing}", "motion_adapter": "{missing}"}, {"vocoder": "{missing}"},
])
def test_missing_pretrained_files_offline_raise_one_clear_error(kwargs: dict, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = str(tmp_path / "not-downloaded")
    kwargs = {k: v.format(missing=missing) for k, v in kwargs.items()}
    with pytest.raises(PretrainedNotFoundError) as info:
        tiny_net(**kwargs)
    assert missing in str(info.value) and "pass None" in str(info.value)


def test_paper_preset_is_ete_yaml_and_the_readme_quotes_its_parameter_counts() -> None:
    from pathlib import Path

    from experiments.fit import merged_config

    config = merged_config("ete.yaml")
    expected = {**config["model"]["init_args"]["net"]["init_args"],
                **{k: config["data"]["init_args"][k] for k in ("vocab_size", "image_size", "num_frames", "motion_frames")}}
    assert preset("paper") == expected
    counts = parameter_counts("paper")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"{counts['total'] / 1e6:,.1f} million" in readme
    assert f"{counts['trainable'] / 1e6:,.1f} million are trained" in readme
    assert counts["appearance_encoder"] == 83_653_863  # the published size of the SD VAE (sd-vae-ft-mse)
    assert counts["total"] == sum(v for k, v in counts.items() if k not in ("total", "trainable"))
    # frozen: the VAE, the vocoder and Wav2Vec2's convolutional feature encoder
    assert counts["total"] - counts["trainable"] > counts["appearance_encoder"] + counts["vocoder"]
    tiny = parameter_counts("tiny", vocab_size=VOCAB)
    net = tiny_net()
    assert tiny["total"] == sum(p.numel() for p in net.parameters())
    assert tiny["trainable"] == sum(p.numel() for p in net.parameters() if p.requires_grad)


def test_pretrained_parts_load_from_local_folders(tmp_path) -> None:
    """Every ``from_pretrained`` path on small random models saved with ``save_pretrained``."""
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
    from transformers import GPT2Config, GPT2Model, Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(5)
    w2v = Wav2Vec2Model(Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                       conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2))
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=8)
    gpt = GPT2Model(GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=128))
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=16, cross_attention_dim=16,
        attention_head_dim=2, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    adapter = MotionAdapter(block_out_channels=(16, 32), motion_layers_per_block=1, motion_num_attention_heads=2,
                            motion_norm_num_groups=16)
    for name, model in {"w2v": w2v, "vae": vae, "gpt": gpt, "adapter": adapter}.items():
        model.save_pretrained(tmp_path / name)
    unet.save_pretrained(tmp_path / "sd" / "unet")  # the SD-1.5 repository layout
    net = tiny_net(wav2vec=str(tmp_path / "w2v"), vae=str(tmp_path / "vae"), gpt2=str(tmp_path / "gpt"),
                   unet=str(tmp_path / "sd"), motion_adapter=str(tmp_path / "adapter"))
    torch.testing.assert_close(net.audio_profile_encoder.wav2vec.encoder.layers[0].attention.q_proj.weight,
                               w2v.encoder.layers[0].attention.q_proj.weight)
    torch.testing.assert_close(net.appearance_encoder.vae.decoder.conv_out.weight, vae.decoder.conv_out.weight)
    torch.testing.assert_close(net.audio_decoder.gpt.h[0].mlp.c_fc.weight, gpt.h[0].mlp.c_fc.weight)
    conv_in = net.video_denoiser.unet.conv_in.weight
    torch.testing.assert_close(conv_in[:, :4], unet.conv_in.weight)  # pretrained channels kept
    assert bool((conv_in[:, 4:] == 0).all())  # the condition channels start with no effect
    assert net.audio_decoder.gpt.h[0].crossattention is not None  # added for DC (video -> audio)
    out = losses(net, batch())
    total_loss(out).backward()
    assert torch.isfinite(total_loss(out)) and params_without_grad(net) == []


def test_decoder_positions_limit_caps_generation_and_is_named_in_training(caplog) -> None:
    net, b = tiny_net(max_decoder_positions=40).eval(), batch()
    with torch.no_grad():
        net.audio_decoder.stop_head.bias.fill_(-50.0)
    prefix = 10 + b["text_ids"].shape[1]  # audio tokens + text
    out = pipeline(net).speech(*conditions(b), max_mel_frames=100)
    assert out["mel"].shape[2] == 40 - prefix and "capped" in caplog.text
    with pytest.raises(ValueError, match="max_decoder_positions"):
        losses(net, b)  # 31 teacher-forced frames do not fit


def test_padded_text_in_raw_video_tokens_is_ignored_by_both_cross_attentions() -> None:
    """Without the video-side encoder the raw text tokens (padding included) feed EC and the decoder."""
    net = tiny_net(attended_tokens="audio").eval()
    b = batch()
    assert bool((~b["text_mask"]).any())  # the batch has padded text
    cond = net.encode_conditions(*conditions(b))
    padded = ~cond["video_mask"]
    changed = {**cond, "video_tokens": cond["video_tokens"].masked_fill(padded[..., None], 7.0)}
    hidden = torch.randn(2, 12, 16)
    windows = frame_windows(hidden, torch.zeros(2, dtype=torch.long), FRAMES)
    motion = torch.zeros(2, 4 * MOTION, SIZE // 2, SIZE // 2)
    sample_ = torch.randn(2, 4, FRAMES, SIZE // 2, SIZE // 2)
    outs = []
    for c in (cond, changed):
        maps, cross = net.denoiser_inputs(c, motion, windows, FRAMES)
        video = net.denoise(sample_, torch.tensor([3, 300]), maps, cross)
        speech = net.decode_speech(c, b["mel"])["mel"]
        outs.append((video, speech))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1])


def test_guidance_dropout_zeroes_the_cross_attention_tokens_in_training_only() -> None:
    module, b = objective(tiny_net(), guidance_dropout=0.999), batch()
    changed = {**b, "mel": b["mel"] + 1.0}  # reaches the UNet only through the DC tokens
    denoise = []
    for mode in (True, False):
        module.train(mode)
        for x in (b, changed):
            torch.manual_seed(1)
            denoise.append(module(x)["denoise"])
    assert denoise[0] == denoise[1]  # training: tokens dropped, the mel does not matter
    assert denoise[2] != denoise[3]  # eval: tokens kept


def test_a_trainable_vae_learns_to_reconstruct_as_part_of_the_pixel_loss() -> None:
    frozen, trained = tiny_net(), tiny_net(train_vae=True)
    assert "vae_recon" not in losses(frozen, batch())
    out = losses(trained, batch())
    assert 0 < float(out["vae_recon"].detach()) < float(out["video_l1"].detach())
    total_loss(out).backward()
    assert params_without_grad(trained) == []
    assert trained.appearance_encoder.vae.encoder.conv_in.weight.grad.abs().sum() > 0


# each pretrained part, built alone, from SOURCE (a bogus hub id or an empty folder)
_OFFLINE_PARTS = (
    "import json, sys\n"
    "from lightning_modules.networks.encoders import AppearanceEncoder, AudioProfileEncoder\n"
    "from lightning_modules.networks.layers import PretrainedNotFoundError\n"
    "from lightning_modules.networks.video_denoiser import VideoDenoiser\n"
    "parts = {'vae': lambda s: AppearanceEncoder(pretrained=s),\n"
    "         'unet': lambda s: VideoDenoiser(4, 8, pretrained_unet=s, pretrained_motion_adapter=s),\n"
    "         'wav2vec': lambda s: AudioProfileEncoder(8, pretrained=s)}\n"
    "out = {}\n"
    "for name, build in parts.items():\n"
    "    try:\n"
    "        build(sys.argv[1])\n"
    "    except PretrainedNotFoundError as err:\n"
    "        out[name] = str(err)\n"
    "print(json.dumps(out))\n"
)


@pytest.fixture(scope="module")
def offline_messages(tmp_path_factory) -> dict:
    """The errors of each part for a bogus hub id and an empty folder, with HF_HUB_OFFLINE=1 and an empty cache."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    base = tmp_path_factory.mktemp("offline")
    (base / "empty").mkdir()
    # the hub reads HF_HUB_OFFLINE once, at import: hence a fresh process
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(base / "hub-cache"), "PYTHONPATH": str(repo)}
    messages = {}
    for kind, source in (("hub", "nfy-test/no-such-model"), ("folder", str(base / "empty"))):
        run = subprocess.run([sys.executable, "-c", _OFFLINE_PARTS, source], cwd=repo, env=env, capture_output=True,
                             text=True, timeout=600, check=False)
        assert run.returncode == 0, run.stderr[-3000:]
        messages[kind] = json.loads(run.stdout.strip().splitlines()[-1])
    return {"cache": str(base / "hub-cache"), "empty": str(base / "empty"), **messages}


_PART_FILES = {
    "vae": ("config.json", "diffusion_pytorch_model.safetensors"),
    "unet": ("unet/config.json", "unet/diffusion_pytorch_model.safetensors"),
    "wav2vec": ("config.json", "model.safetensors"),
}


@pytest.mark.slow  # two fresh processes importing diffusers and transformers
@pytest.mark.parametrize("part", sorted(_PART_FILES))
def test_offline_unknown_hub_id_says_it_is_not_cached_and_how_to_get_it(offline_messages: dict, part: str) -> None:
    message = offline_messages["hub"][part]
    assert "nfy-test/no-such-model" in message
    assert "not in the local Hugging Face cache" in message and offline_messages["cache"] in message
    assert "HF_HUB_OFFLINE" in message and "download nfy-test/no-such-model" in message
    for name in _PART_FILES[part]:
        assert name in message, (name, message)
    assert "does not appear to have a file named" not in message  # the library's misleading line


@pytest.mark.slow
@pytest.mark.parametrize("part", sorted(_PART_FILES))
def test_empty_local_folder_says_which_files_are_missing(offline_messages: dict, part: str) -> None:
    message = offline_messages["folder"][part]
    assert f"the folder {offline_messages['empty']}" in message and "is empty" in message
    for name in _PART_FILES[part]:
        assert name in message, (name, message)
    assert "save_pretrained" in message and "--local-dir" in message
    assert f"hub id {offline_messages['empty']!r}" not in message  # a folder is not to be made a reachable hub id


def test_pixel_loss_frames_decodes_only_k_random_frames_and_none_keeps_all() -> None:
    net, b = tiny_net(train_vae=True), batch()
    decoded: list[int] = []  # frames per call of the VAE decoder
    net.appearance_encoder.vae.decoder.register_forward_hook(lambda m, args, out: decoded.append(out.shape[0]))
    torch.manual_seed(3)
    full = losses(net, b)
    assert decoded == [2 * FRAMES, 2 * FRAMES]  # x0 estimate and the VAE's reconstruction, every frame
    decoded.clear()
    torch.manual_seed(3)  # same noise and timesteps: the chosen frames' estimates are frames of ``full``
    part = losses(net, b, pixel_loss_frames=2)
    assert decoded == [2 * 2, 2 * 2] and part["pred_frames"].shape == (2, 2, 3, SIZE, SIZE)
    torch.testing.assert_close(part["denoise"], full["denoise"])
    target = b["video"][:, MOTION:]
    chosen = [_match(full, part, row) for row in range(2)]
    for row in range(2):
        assert len(set(chosen[row])) == 2  # two different frames
        torch.testing.assert_close(part["pred_frames"][row], full["pred_frames"][row, chosen[row]], atol=1e-5, rtol=0)
    # the VAE term, like the pixel L1, is taken on the chosen frames' targets only
    with torch.no_grad():
        picked = torch.stack([target[row, chosen[row]] for row in range(2)])  # (B, 2, 3, H, W)
        recon = net.decode_latents(net.encode_frames(picked))
    torch.testing.assert_close(part["vae_recon"], (recon - picked).abs().mean(), atol=1e-5, rtol=0)
    assert losses(net, b, pixel_loss_frames=FRAMES)["pred_frames"].shape[1] == FRAMES  # k >= F: all frames


def _match(full: dict, part: dict, row: int) -> list[int]:
    """Indices of ``full``'s frames that ``part``'s frames of ``row`` are."""
    return [min(range(full["pred_frames"].shape[1]),
                key=lambda f: float((full["pred_frames"][row, f] - frame).abs().max()))
            for frame in part["pred_frames"][row]]


@pytest.mark.parametrize("cross_attention", [True, False])
def test_generation_with_and_without_the_key_value_cache_agree(cross_attention: bool) -> None:
    import warnings

    torch.manual_seed(0)
    dec = AudioDecoder(16, width=16, layers=2, heads=2, max_positions=64, cross_attention=cross_attention).eval()
    prefix, video = torch.randn(2, 6, 16), torch.randn(2, 4, 16) if cross_attention else None
    prefix_mask = torch.ones(2, 6, dtype=torch.bool)
    prefix_mask[1, 4:] = False
    with torch.no_grad():
        dec.stop_head.bias.fill_(-50.0)  # never stop: both run to max_frames
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated transformers argument on the way
        cached = dec.generate(prefix, prefix_mask, 8, video)
        full = dec.generate(prefix, prefix_mask, 8, video, use_cache=False)
    torch.testing.assert_close(cached["mel"], full["mel"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cached["hidden"], full["hidden"], atol=1e-4, rtol=1e-4)


def test_speech_decoder_ignores_the_batch_padding_of_its_prefix() -> None:
    """A row's teacher-forced frames are the same with its text padded (as a batch pads it) as without:
    positions count real tokens only."""
    torch.manual_seed(0)
    dec = AudioDecoder(16, width=16, layers=2, heads=2, cross_attention=False, prenet_dropout=0.0).eval()
    prefix, mel = torch.randn(1, 5, 16), torch.randn(1, 80, 6) - 4
    padded = torch.cat([prefix, torch.randn(1, 2, 16)], dim=1)  # two padding tokens after the text
    mask = torch.tensor([[True] * 5 + [False] * 2])
    alone = dec(prefix, torch.ones(1, 5, dtype=torch.bool), mel)
    in_batch = dec(padded, mask, mel)
    torch.testing.assert_close(in_batch["mel"], alone["mel"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(in_batch["stop_logits"], alone["stop_logits"], atol=1e-5, rtol=1e-5)
