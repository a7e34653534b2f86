"""The ablation flags of NFYNetwork (paper Tables 6 and 7) really remove what they name.

For every flag: the named module is gone (fewer parameters), it is never called (forward hooks), the
remaining network still trains (every trainable parameter receives a gradient), and, where the
component carries a signal, the signal no longer reaches its consumer.
"""

from __future__ import annotations

import pytest
import torch

from lightning_modules.networks import video_denoiser
from tests.model.fixtures import ABLATIONS, network_parts
from tests.model.test_networks import (
    batch,
    conditions,
    losses,
    params_without_grad,
    pipeline,
    tiny_net,
    total_loss,
)


def trainable(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def called_modules(net: torch.nn.Module, names: list[str]) -> dict[str, int]:
    """Run one forward pass and count the calls of the named submodules."""
    calls = {name: 0 for name in names}
    handles = []
    for name in names:
        module = net.get_submodule(name)
        handles.append(module.register_forward_hook(lambda *_, key=name: calls.__setitem__(key, calls[key] + 1)))
    total_loss(losses(net, batch())).backward()
    for handle in handles:
        handle.remove()
    return calls


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_flag_removes_its_modules_and_the_rest_still_trains(name: str) -> None:
    ablation = ABLATIONS[name]
    full, ablated = tiny_net(), tiny_net(**ablation.flags)
    assert trainable(ablated) < trainable(full)
    before, after = network_parts(full), network_parts(ablated)
    assert ablation.removed <= before and not ablation.removed & after, ablation.removed & after
    assert ablation.added <= after and not ablation.added & before
    modules = dict(full.named_modules())
    present = sorted(part for part in ablation.removed if part in modules)
    assert all(count > 0 for count in called_modules(full, present).values())
    out = losses(ablated, batch())
    total_loss(out).backward()
    assert torch.isfinite(total_loss(out))
    assert params_without_grad(ablated) == []


def test_ste_is_one_shared_encoder_called_for_both_sides() -> None:
    ete, ste = tiny_net(), tiny_net(entanglement="ste")
    assert called_modules(ete, ["audio_entangler", "video_entangler"]) == {"audio_entangler": 1, "video_entangler": 1}
    assert called_modules(ste, ["shared_entangler"]) == {"shared_entangler": 2}
    one_encoder = sum(p.numel() for p in ete.audio_entangler.parameters())
    modality_embeddings = ste.shared_entangler.modality.weight.numel()
    assert trainable(ete) - trainable(ste) == one_encoder - modality_embeddings


def test_dc_off_removes_both_directions() -> None:
    full, ablated = tiny_net(), tiny_net(diffusion_cross_attention=False)
    assert full.audio_decoder.gpt.h[0].crossattention is not None  # video -> audio
    assert not hasattr(ablated.audio_decoder.gpt.h[0], "crossattention")
    assert not ablated.audio_decoder.gpt.config.add_cross_attention
    # audio -> video: with DC the denoiser's output depends on the audio decoder (through the target
    # mel it was teacher-forced on); without DC it does not.
    b = batch()
    changed = {**b, "mel": b["mel"] + 1.0}
    for net, depends in ((full, True), (ablated, False)):
        torch.manual_seed(1)
        first = losses(net, b)["denoise"]
        torch.manual_seed(1)
        second = losses(net, changed)["denoise"]
        assert bool(first != second) == depends


@pytest.mark.parametrize("flags, ec_counts", [
    ({}, "positive"), ({"embedding_cross_attention": False}, "zero"),
])
def test_ec_flag_decides_whether_the_unet_attends_to_video_side_tokens(flags: dict, ec_counts: str,
                                                                      monkeypatch) -> None:
    seen: list[int] = []
    original = video_denoiser.GatedCrossAttnProcessor.__call__

    def spy(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
            ec_tokens=None, lip_gate=None):
        if encoder_hidden_states is not None and ec_tokens is not None:
            seen.append(ec_tokens)
        return original(self, attn, hidden_states, encoder_hidden_states, attention_mask, temb, ec_tokens, lip_gate)

    monkeypatch.setattr(video_denoiser.GatedCrossAttnProcessor, "__call__", spy)
    losses(tiny_net(**flags), batch())
    assert seen, "the UNet's cross-attention was never called"
    assert all(n > 0 for n in seen) if ec_counts == "positive" else all(n == 0 for n in seen)


def test_without_ec_and_dc_the_unet_cross_attention_is_frozen_and_inert() -> None:
    net = tiny_net(diffusion_cross_attention=False, embedding_cross_attention=False)
    cross = [m for m in net.video_denoiser.unet.modules() if getattr(m, "is_cross_attention", False)]
    assert cross and not any(p.requires_grad for m in cross for p in m.parameters())
    b = batch()
    torch.manual_seed(1)
    first = losses(net, b)["denoise"]
    with torch.no_grad():
        for module in cross:
            module.to_v.weight.normal_()  # changing them changes nothing
    torch.manual_seed(1)
    assert losses(net, b)["denoise"] == first


def test_the_face_reaches_the_speech_only_through_visual_tokens_or_dc() -> None:
    """Without DC, the face reaches the audio decoder only as visual tokens of the audio-side encoder."""
    b = batch()
    other_face = {**b, "ref_image": -b["ref_image"]}
    for flags, depends in (({"diffusion_cross_attention": False}, True),
                           ({"diffusion_cross_attention": False, "use_visual_tokens": False}, False)):
        net = tiny_net(**flags).eval()
        with torch.no_grad():
            net.audio_decoder.stop_head.bias.fill_(-50.0)
        first = pipeline(net).speech(*conditions(b), max_mel_frames=3)["mel"]
        second = pipeline(net).speech(*conditions(other_face), max_mel_frames=3)["mel"]
        assert (not torch.allclose(first, second)) == depends


@pytest.mark.parametrize("flag, module", [
    ("use_audio_sequence_encoder", "audio_sequence_encoder"), ("use_audio_profile_encoder", "audio_profile_encoder"),
])
def test_removed_audio_encoders_are_not_called_in_generation(flag: str, module: str) -> None:
    full = tiny_net().eval()
    calls = {"n": 0}
    full.get_submodule(module).register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    pipeline(full).speech(*conditions(batch()), max_mel_frames=2)
    assert calls["n"] == 1
    ablated = tiny_net(**{flag: False}).eval()
    assert getattr(ablated, module) is None
    out = pipeline(ablated).speech(*conditions(batch()), max_mel_frames=2)
    assert torch.isfinite(out["mel"]).all()
