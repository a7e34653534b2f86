"""Generation speed-ups of NFYPipeline on the tiny network: conditions encoded once per clip, both
guidance branches in one denoiser call, sliced VAE decoding, bf16 autocast, torch.compile, DPM-Solver++."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from lightning_modules.diffusion import training_scheduler
from lightning_modules.pipeline import NFYPipeline
from tests.model.test_networks import FRAMES, batch, conditions, tiny_net

STEPS = 2


@pytest.fixture(scope="module")
def net():
    """The tiny network in eval mode whose speech never stops early (every run has the asked length)."""
    network = tiny_net(seed=0).eval()
    with torch.no_grad():
        network.audio_decoder.stop_head.bias.fill_(-50.0)
    return network


@pytest.fixture(scope="module")
def clip():
    """One batch of two clips and the decoder states of 10 mel frames (4 video frames) of speech."""
    b = batch()
    hidden = torch.randn(2, 10, 16, generator=torch.Generator().manual_seed(0))
    return b, hidden


def sampler(net, **options) -> NFYPipeline:
    return NFYPipeline.from_training_scheduler(net, training_scheduler(), **options)


def window(pipe: NFYPipeline, clip, **kwargs) -> torch.Tensor:
    """One 4-frame window from a fixed seed."""
    b, hidden = clip
    args = (b["ref_image"], b["face_mask"], b["lip_mask"], b["text_ids"], b["text_mask"], b["profile_wav"], hidden)
    kwargs = {"num_inference_steps": STEPS, "guidance_scale": 2.0, **kwargs}
    return pipe.video_window(*args, num_frames=FRAMES, generator=torch.Generator().manual_seed(0), **kwargs)


def test_conditions_are_encoded_once_per_clip_whatever_the_number_of_windows(net, clip) -> None:
    b, _ = clip
    pipe = sampler(net)
    with mock.patch.object(net, "encode_conditions", wraps=net.encode_conditions) as encode:
        # 25 mel frames = 6,400 samples = 10 video frames = 3 windows of 4
        out = pipe(*conditions(b), num_inference_steps=1, max_mel_frames=25)
    assert out["video"].shape[1] == 10
    assert encode.call_count == 1
    with mock.patch.object(net, "encode_conditions", wraps=net.encode_conditions) as encode:
        video = pipe.video(b["ref_image"], b["face_mask"], b["lip_mask"], b["text_ids"], b["text_mask"],
                           b["profile_wav"], clip[1], total_frames=3 * FRAMES, num_inference_steps=1)
    assert video.shape[1] == 3 * FRAMES
    assert encode.call_count == 1


def test_batched_guidance_gives_the_two_call_frames_in_half_the_denoiser_calls(net, clip) -> None:
    counts = {}
    frames = {}
    for batched in (False, True):
        with mock.patch.object(net, "denoise", wraps=net.denoise) as denoise:
            frames[batched] = window(sampler(net, batched_guidance=batched), clip)
        counts[batched] = denoise.call_count
    assert counts == {False: 2 * STEPS, True: STEPS}
    torch.testing.assert_close(frames[True], frames[False], atol=1e-5, rtol=1e-5)
    assert sampler(net).batched_guidance  # on by default


def test_sliced_decoding_equals_decoding_the_window_at_once(net, clip) -> None:
    with mock.patch.object(net, "decode_diffused", wraps=net.decode_diffused) as decode:
        sliced = window(sampler(net, decode_slice=1), clip)
    assert [call.args[0].shape[2] for call in decode.call_args_list] == [1] * FRAMES
    whole = window(sampler(net, decode_slice=None), clip)
    torch.testing.assert_close(sliced, whole, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="decode_slice"):
        sampler(net, decode_slice=0)


def test_dpm_solver_plus_plus_makes_finite_frames_in_ten_steps(net, clip) -> None:
    pipe = sampler(net, sampler="dpm++")
    assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
    assert pipe.scheduler.config.algorithm_type == "dpmsolver++"
    assert isinstance(sampler(net).scheduler, DDIMScheduler)  # DDIM by default
    with mock.patch.object(net, "denoise", wraps=net.denoise) as denoise:
        frames = window(pipe, clip, num_inference_steps=10, guidance_scale=1.0)
    assert denoise.call_count == 10
    assert frames.shape == (2, FRAMES, 3, 32, 32)
    assert torch.isfinite(frames).all() and frames.abs().max() <= 1.0
    with pytest.raises(ValueError, match="sampler.*'euler'"):
        sampler(net, sampler="euler")


def test_bf16_autocast_runs_the_network_in_bf16_and_stays_close(net, clip) -> None:
    seen = []

    def spy(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return net.__class__.denoise(net, *args, **kwargs)

    with mock.patch.object(net, "denoise", side_effect=spy):
        low = window(sampler(net, dtype=torch.bfloat16), clip)
    full = window(sampler(net), clip)
    assert seen and all(seen)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    torch.testing.assert_close(low, full, atol=0.1, rtol=0)
    with pytest.raises(ValueError, match="dtype"):
        sampler(net, dtype=torch.int64)


def test_compile_is_off_by_default_and_the_flag_compiles_the_denoiser(net, clip, monkeypatch) -> None:
    compiled = []

    def fake_compile(fn, **kwargs):
        def wrapper(*args, **kw):
            compiled.append(True)
            return fn(*args, **kw)
        return wrapper

    monkeypatch.setattr(torch, "compile", fake_compile)
    window(sampler(net), clip, guidance_scale=1.0)
    assert not compiled
    window(sampler(net, compile=True), clip, guidance_scale=1.0)
    assert len(compiled) == STEPS


# ---------------------------------------------------------------------------------- rows of a batch
@pytest.fixture(scope="module")
def aided_net():
    """The tiny network with tiny.yaml's learning aids: pre-net dropout when generating and the alignment aid."""
    network = tiny_net(seed=1, prenet_dropout_at_inference=True, alignment_aid=True).eval()
    with torch.no_grad():
        network.audio_decoder.stop_head.bias.fill_(-50.0)  # never stops by itself
    return network


def _row(b: dict, i: int) -> dict:
    """Row ``i`` of batch ``b`` as a batch of one, its text without the batch's padding."""
    row = {k: v[i : i + 1] for k, v in b.items() if torch.is_tensor(v)}
    length = int(row["text_mask"].sum())
    row["text_ids"], row["text_mask"] = row["text_ids"][:, :length], row["text_mask"][:, :length]
    return row


def test_a_batched_row_is_its_clip_generated_alone(aided_net) -> None:
    """With one generator per row, a row's speech and video do not depend on the other rows: not on
    their text length (padding), their speech length, nor their place in the batch."""
    b = batch()
    assert int(b["text_mask"][0].sum()) < b["text_mask"].shape[1]  # row 0's text is padded
    pipe = sampler(aided_net)
    lengths = torch.tensor([12, 7])
    both = pipe(*conditions(b), num_inference_steps=STEPS, mel_frames=lengths,
                generator=[torch.Generator().manual_seed(seed) for seed in (5, 6)])
    assert both["mel_lengths"].tolist() == [12, 7] and both["num_frames"].tolist() == [5, 3]
    for i, seed in enumerate((5, 6)):
        alone = pipe(*conditions(_row(b, i)), num_inference_steps=STEPS, mel_frames=lengths[i : i + 1],
                     generator=[torch.Generator().manual_seed(seed)])
        n, f = int(lengths[i]), int(both["num_frames"][i])
        torch.testing.assert_close(both["mel"][i, :, :n], alone["mel"][0, :, :n], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(both["video"][i, :f], alone["video"][0, :f], atol=1e-4, rtol=1e-4)
        wav, wav_alone = both["wav"][i, : n * 256], alone["wav"][0, : n * 256]
        assert wav_alone.abs().max() > 1e-4
        # Griffin-Lim's 32 iterations amplify the mels' float differences (about 1e-6) to about 1 % of
        # the signal; its own randomness is gone (the same mel gives the same samples)
        assert (wav - wav_alone).norm() <= 5e-2 * wav_alone.norm()
        mel = alone["mel"][:, :, :n]
        assert torch.equal(aided_net.vocoder(mel), aided_net.vocoder(mel.clone()))
    # the rows differ from each other (nothing was mixed up or shared)
    assert not torch.allclose(both["video"][0, :3], both["video"][1, :3], atol=1e-3)


def test_speech_runs_to_the_asked_length_whatever_the_stop_head_says() -> None:
    network = tiny_net(seed=2).eval()
    with torch.no_grad():
        network.audio_decoder.stop_head.bias.fill_(50.0)  # would stop at the first frame
    pipe = sampler(network)
    b = batch()
    free = pipe.speech(*conditions(b), max_mel_frames=30)
    assert free["mel_lengths"].tolist() == [1, 1]
    out = pipe(*conditions(b), num_inference_steps=1, mel_frames=torch.tensor([9, 16]), max_mel_frames=5)
    assert out["mel_lengths"].tolist() == [9, 16]  # the asked lengths win over max_mel_frames too
    assert out["wav_lengths"].tolist() == [9 * 256, 16 * 256] and out["num_frames"].tolist() == [4, 7]
    assert out["video"].shape[1] == 7
    with pytest.raises(ValueError, match="mel_frames"):
        pipe(*conditions(b), num_inference_steps=1, mel_frames=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="mel_frames"):
        pipe(*conditions(b), num_inference_steps=1, mel_frames=torch.tensor([4]))
    with pytest.raises(ValueError, match="generator"):
        pipe(*conditions(b), num_inference_steps=1, generator=[torch.Generator()])
