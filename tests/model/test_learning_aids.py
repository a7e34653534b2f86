"""Recipe switches that make the tiny model learn on the demo corpus (README, "Deviations"): the
speech decoder's alignment aid and pre-net dropout at inference. Each is checked against what it
claims, on a small random decoder."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.networks import AudioDecoder

DIM, TEXT, AUDIO = 16, 6, 3


def decoder(**kwargs) -> AudioDecoder:
    torch.manual_seed(0)
    return AudioDecoder(dim=DIM, width=16, layers=1, heads=2, max_positions=128, cross_attention=False, **kwargs)


def prefix(batch: int = 2, real_text: tuple[int, ...] = (6, 4)) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, AUDIO + TEXT, D) conditioning and its mask; row b has ``real_text[b]`` real text tokens."""
    torch.manual_seed(1)
    tokens = torch.randn(batch, AUDIO + TEXT, DIM)
    mask = torch.ones(batch, AUDIO + TEXT, dtype=torch.bool)
    for row, real in enumerate(real_text):
        mask[row, AUDIO + real :] = False
    return tokens, mask


def test_alignment_aid_predicts_the_length_and_needs_it_in_training() -> None:
    net = decoder(alignment_aid=True)
    tokens, mask = prefix()
    mel = torch.randn(2, 80, 20) - 5
    out = net(tokens, mask, mel, lengths=torch.tensor([20, 12]), text_positions=TEXT)
    assert out["log_duration"].shape == (2,) and out["mel"].shape == (2, 80, 20)
    # the prediction starts from log(real text tokens): one correction on top of the text length
    assert torch.isfinite(out["log_duration"]).all()
    with pytest.raises(ValueError, match="alignment_aid needs lengths"):
        net(tokens, mask, mel)
    assert "log_duration" not in decoder()(tokens, mask, mel)  # the paper's decoder has no such head


def test_alignment_aid_gives_each_frame_the_text_at_its_progress() -> None:
    """Changing the last text token changes the decoder's input at late frames, not at early ones:
    its one-layer attention also sees the whole text, so compare with the same change without the aid."""
    tokens, mask = prefix(batch=1, real_text=(6,))
    changed = tokens.clone()
    changed[0, AUDIO + TEXT - 1] += 3.0
    mel = torch.randn(1, 80, 40) - 5
    lengths = torch.tensor([40])

    def effect(**kwargs) -> torch.Tensor:
        net = decoder(prenet_dropout=0.0, **kwargs).eval()
        a = net(tokens, mask, mel, lengths=lengths, text_positions=TEXT)["hidden"]
        b = net(changed, mask, mel, lengths=lengths, text_positions=TEXT)["hidden"]
        return (a - b).norm(dim=-1)[0]  # (T,)

    aided, plain = effect(alignment_aid=True), effect()
    # the aid adds the change where progress reaches the last token (the last sixth of the frames)
    late, early = slice(34, 40), slice(0, 6)
    assert (aided[late] - plain[late]).mean() > 5 * (aided[early] - plain[early]).abs().mean()


def test_alignment_aid_generation_uses_the_predicted_length() -> None:
    net = decoder(alignment_aid=True).eval()
    tokens, mask = prefix()
    out = net.generate(tokens, mask, max_frames=30, text_positions=TEXT)
    assert out["predicted_lengths"].shape == (2,)
    assert ((out["predicted_lengths"] >= 1) & (out["predicted_lengths"] <= 30)).all()


def test_prenet_dropout_at_inference_keeps_generation_stochastic() -> None:
    tokens, mask = prefix()

    def two_runs(**kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        net = decoder(prenet_dropout=0.5, **kwargs).eval()
        torch.manual_seed(2)
        first = net.generate(tokens, mask, max_frames=8)["mel"]
        torch.manual_seed(3)
        return first, net.generate(tokens, mask, max_frames=8)["mel"]

    a, b = two_runs()
    torch.testing.assert_close(a, b)  # dropout off in eval: deterministic
    a, b = two_runs(prenet_dropout_at_inference=True)
    assert not torch.allclose(a[:, :, 1:], b[:, :, 1:])  # frames after the first see dropped-out inputs
    torch.testing.assert_close(a[:, :, 0], b[:, :, 0])  # the first frame has no pre-net input


def test_mouth_loss_weight_makes_the_video_terms_see_the_lip_pixels() -> None:
    """An error only inside the lip mask (1/8 of these frames) moves the weighted pixel L1 about six
    times as much as the paper's plain mean; weight 0 is the plain mean."""
    from tests.model.test_networks import MOTION, batch, losses, tiny_net

    clean = batch()
    damaged = {**clean, "video": clean["video"].clone()}
    lip = clean["lip_mask"][:, None].bool().expand_as(damaged["video"][:, MOTION:])  # (B, F, 3, H, W)
    damaged["video"][:, MOTION:][lip] += 0.5

    def increase(weight: float) -> float:
        def video_l1(b: dict) -> float:
            torch.manual_seed(5)  # the same noise, timesteps and dropout for both batches
            return float(losses(tiny_net(seed=0), b, mouth_loss_weight=weight)["video_l1"])

        return video_l1(damaged) - video_l1(clean)

    plain, weighted = increase(0.0), increase(20.0)
    assert plain > 0
    assert weighted > 3 * plain


def test_alignment_aid_adds_the_duration_term_to_the_objective() -> None:
    from tests.model.test_networks import batch, losses, tiny_net

    b = batch()
    out = losses(tiny_net(alignment_aid=True), b)
    assert out["duration"].ndim == 0 and torch.isfinite(out["duration"]) and out["duration"] > 0
    assert "duration" not in losses(tiny_net(), b)  # the paper's objective is unchanged
