"""Every shipped config parses on its own and builds with tiny.yaml on top; each ablation removes what it names."""

from __future__ import annotations

import importlib.util

from pathlib import Path

import pytest
import torch
import yaml

from datamodules.batch import collate
from experiments.fit import CONFIG_DIR, NFYCLI
from tests.model.fixtures import ABLATIONS, network_parts, synthetic_sample

QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def _build(*configs: str) -> NFYCLI:
    args = [arg for config in ("ete.yaml", *configs, "tiny.yaml") for arg in ("--config", config)]
    return NFYCLI(args=[*args, *QUIET])


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
    return {"params": sum(p.numel() for p in net.parameters()), "parts": network_parts(net), "kv": _kv_lengths(net)}


NEEDS_EXTRA = {"ete_48gb.yaml": "bitsandbytes"}


def test_every_config_parses_alone(capsys) -> None:
    names = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
    assert {"ete.yaml", "tiny.yaml", *(f"{ablation}.yaml" for ablation in ABLATIONS)} <= set(names)
    for name in names:
        if name in NEEDS_EXTRA and importlib.util.find_spec(NEEDS_EXTRA[name]) is None:
            continue  # its optimiser class comes with a setup.cfg extra (tested in test_memory.py)
        configs = ["ete.yaml"] if name == "ete.yaml" else ["ete.yaml", name]
        with pytest.raises(SystemExit) as exit_info:
            NFYCLI(args=[arg for c in configs for arg in ("--config", c)] + ["--print_config"])
        assert exit_info.value.code in (0, None), name
        printed = yaml.safe_load(capsys.readouterr().out)
        net = printed["model"]["init_args"]["net"]["init_args"]
        ablation = ABLATIONS.get(name.removesuffix(".yaml"))
        for flag, value in (ablation.flags if ablation else {}).items():
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


@pytest.mark.parametrize("name", [f"{ablation}.yaml" for ablation in sorted(ABLATIONS)])
def test_ablation_removes_what_it_names(name: str, baseline: dict) -> None:
    ablation = ABLATIONS[name.removesuffix(".yaml")]
    cli = _build(name)
    net = cli.model.net
    stored = cli.model.hparams.net["init_args"]
    assert {flag: stored[flag] for flag in ablation.flags} == ablation.flags
    parts = network_parts(net)
    removed, added = ablation.removed, ablation.added
    assert removed <= baseline["parts"] and not removed & parts, f"{name} keeps {removed & parts}"
    assert added <= parts and not added & baseline["parts"]
    params = sum(p.numel() for p in net.parameters())
    assert params != baseline["params"], f"{name} has the baseline's {params} parameters"
    kv = _kv_lengths(net)
    if name == "no_visual_tokens.yaml":  # the audio-side encoder attends to no visual token any more
        assert kv["audio_entangler"] < baseline["kv"]["audio_entangler"]
    if name == "ste.yaml":  # one shared encoder runs for both sides
        assert set(kv) == {"shared_entangler"}
    if name == "no_te.yaml":  # no transformer encoder runs at all
        assert kv == {}
