"""Every shipped config parses on its own and builds with tiny.yaml on top; each ablation removes what it names."""

from __future__ import annotations

import importlib.util

from pathlib import Path

import pytest
import torch
import yaml

from datamodules.batch import collate
from experiments.fit import CONFIG_DIR, NFYCLI
from tests.model.test_module import synthetic_sample

ABLATIONS: dict[str, tuple[dict, set[str], set[str]]] = {
    # config: (flags it sets, top-level modules it removes, modules it adds)
    "ste.yaml": ({"entanglement": "ste"}, {"audio_entangler", "video_entangler"}, {"shared_entangler"}),
    "no_te.yaml": ({"entanglement": "none"}, {"audio_entangler", "video_entangler"}, set()),
    "dc_off.yaml": ({"diffusion_cross_attention": False}, {"dc_proj", "dc_slots"}, set()),
    "ec_off.yaml": ({"embedding_cross_attention": False}, {"ec_proj"}, set()),
    "dc_ec_off.yaml": ({"diffusion_cross_attention": False, "embedding_cross_attention": False},
                       {"dc_proj", "dc_slots", "ec_proj", "video_entangler"}, set()),
    "only_visual_tokens.yaml": ({"attended_tokens": "visual"}, {"audio_entangler"}, set()),
    "only_audio_tokens.yaml": ({"attended_tokens": "audio"}, {"video_entangler"}, set()),
    "no_audio_sequence.yaml": ({"use_audio_sequence_encoder": False}, {"audio_sequence_encoder"}, {"audio_query"}),
    "no_audio_profile.yaml": ({"use_audio_profile_encoder": False}, {"audio_profile_encoder"}, set()),
    "no_visual_tokens.yaml": ({"use_visual_tokens": False}, {"appearance_tokens"}, {"video_query"}),
}
QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def _build(*configs: str) -> NFYCLI:
    args = [arg for config in ("ete.yaml", *configs, "tiny.yaml") for arg in ("--config", config)]
    return NFYCLI(args=[*args, *QUIET])


def _top_level(net: torch.nn.Module) -> set[str]:
    """Names of the network's direct parameters and of its direct children that hold parameters."""
    return {name.split(".")[0] for name, _ in net.named_parameters()}


def _kv_lengths(net: torch.nn.Module) -> dict[str, int]:
    """Length of the K/V sequence each entangled encoder attends to, on one synthetic batch."""
    seen: dict[str, int] = {}
    hooks = [getattr(net, name).register_forward_pre_hook(
                 lambda module, args, name=name: seen.__setitem__(name, int(args[1].shape[1])))
             for name in ("audio_entangler", "video_entangler", "shared_entangler") if getattr(net, name) is not None]
    batch = collate([synthetic_sample(i, 256, net.image_size, net.motion_frames + net.num_frames) for i in range(2)])
    with torch.no_grad():
        net.encode_conditions(batch["text_ids"], batch["text_mask"], batch["ref_image"], batch["face_mask"],
                              batch["lip_mask"], batch["profile_wav"])
    for hook in hooks:
        hook.remove()
    return seen


@pytest.fixture(scope="module")
def baseline() -> dict:
    cli = _build()
    net = cli.model.net
    return {"params": sum(p.numel() for p in net.parameters()), "modules": _top_level(net), "kv": _kv_lengths(net)}


NEEDS_EXTRA = {"ete_48gb.yaml": "bitsandbytes"}


def test_every_config_parses_alone(capsys) -> None:
    names = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
    assert {"ete.yaml", "tiny.yaml", *ABLATIONS} <= set(names)
    for name in names:
        if name in NEEDS_EXTRA and importlib.util.find_spec(NEEDS_EXTRA[name]) is None:
            continue  # its optimiser class comes with a setup.cfg extra (tested in test_memory.py)
        configs = ["ete.yaml"] if name == "ete.yaml" else ["ete.yaml", name]
        with pytest.raises(SystemExit) as exit_info:
            NFYCLI(args=[arg for c in configs for arg in ("--config", c)] + ["--print_config"])
        assert exit_info.value.code in (0, None), name
        printed = yaml.safe_load(capsys.readouterr().out)
        net = printed["model"]["init_args"]["net"]["init_args"]
        for flag, value in ABLATIONS.get(name, ({}, None, None))[0].items():
            assert net[flag] == value, (name, flag)


def test_paper_config_is_the_papers() -> None:
    config = yaml.safe_load((CONFIG_DIR / "ete.yaml").read_text())
    model = config["model"]["init_args"]
    assert model["optimizer"] == {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-4, "weight_decay": 1e-2}}
    assert model["scheduler"]["init_args"] == {"step_size": 1000, "gamma": 0.5}
    assert (model["video_weight"], model["audio_weight"]) == (1.0, 0.1)
    batch = config["data"]["init_args"]["batch_size"] * config["trainer"]["accumulate_grad_batches"]
    assert batch == 8 and config["trainer"]["max_epochs"] == 10  # micro-batches accumulated to the paper's 8
    assert config["data"]["class_path"] == "datamodules.combined.CombinedDataModule"
    net = model["net"]["init_args"]
    assert all(net[part] for part in ("wav2vec", "vae", "gpt2", "unet", "motion_adapter", "vocoder"))


def test_tiny_on_top_links_data_values(baseline) -> None:
    cli = _build()
    data, net = cli.datamodule, cli.model.net
    assert type(data).__name__ == "DemoDataModule"
    assert data.cache_dir == data.root / "cache" / str(data.image_size)  # ete.yaml's dataset cache does not leak in
    assert (net.image_size, net.num_frames, net.motion_frames) == (data.image_size, data.num_frames, data.motion_frames)
    assert net.text_encoder.tokens.num_embeddings == data.vocab_size
    assert baseline["kv"].keys() == {"audio_entangler", "video_entangler"}


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablation_removes_what_it_names(name: str, baseline: dict) -> None:
    flags, removed, added = ABLATIONS[name]
    cli = _build(name)
    net = cli.model.net
    stored = cli.model.hparams.net["init_args"]
    assert {flag: stored[flag] for flag in flags} == flags
    modules = _top_level(net)
    assert removed <= baseline["modules"] and not removed & modules, f"{name} keeps {removed & modules}"
    assert added <= modules and not added & baseline["modules"]
    params = sum(p.numel() for p in net.parameters())
    assert params != baseline["params"], f"{name} has the baseline's {params} parameters"
    kv = _kv_lengths(net)
    if name == "no_visual_tokens.yaml":  # the audio-side encoder attends to no visual token any more
        assert kv["audio_entangler"] < baseline["kv"]["audio_entangler"]
    if name == "ste.yaml":  # one shared encoder runs for both sides
        assert set(kv) == {"shared_entangler"}
    if name == "no_te.yaml":  # no transformer encoder runs at all
        assert kv == {}
