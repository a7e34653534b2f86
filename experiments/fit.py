"""Train the NFY model: ``python -m experiments.fit --config ete.yaml [--config tiny.yaml] [overrides]``.

A :class:`~lightning.pytorch.cli.LightningCLI` in subclass mode (any LightningModule subclass of
:class:`NFYLitModule` and any LightningDataModule, chosen by ``class_path`` in the YAML), built
with ``run=False`` so this script owns the call to ``trainer.fit`` and its ``--ckpt_path``.

* ``--config NAME`` takes a path or a bare file name of ``experiments/configs/`` (``ete.yaml``,
  ``tiny.yaml`` ...); several merge left to right, dotted flags (``--trainer.max_steps 10``)
  override them. An unknown key is an error at parse time.
* Values that both sides must agree on are stated once, by the DataModule, and linked into the
  network when the DataModule exists: ``vocab_size``, ``image_size``, ``num_frames`` (window),
  ``motion_frames``. Frame rate and sample rate are fixed in :mod:`datamodules.conventions`.
* ``--ckpt_path last.ckpt`` resumes a run exactly (weights, optimiser, scheduler, loop counters).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_modules import NFYLitModule

log = logging.getLogger(__name__)

CONFIG_DIR: Path = Path(__file__).resolve().parent / "configs"
"""Folder of the shipped configs; ``--config`` resolves bare names against it."""
LINKED_FROM_DATA: tuple[str, ...] = ("vocab_size", "image_size", "num_frames", "motion_frames")
"""DataModule attributes copied into ``model.net`` after the DataModule is built."""


def resolve_config(value: str) -> str:
    """``value`` if it is an existing path, else ``experiments/configs/<value>`` when that exists.

    Raises:
        FileNotFoundError: neither exists (names the value and the folder searched).
    """
    path = Path(value)
    if path.is_file():
        return str(path)
    shipped = CONFIG_DIR / value
    if shipped.is_file():
        return str(shipped)
    names = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"--config {value!r}: no such file, nor in {CONFIG_DIR} (which holds {names})")


def resolve_config_args(args: Sequence[str]) -> list[str]:
    """Rewrite every ``--config NAME`` / ``--config=NAME`` in ``args`` with :func:`resolve_config`."""
    out: list[str] = []
    expect_value = False
    for arg in args:
        if expect_value:
            out.append(resolve_config(arg))
            expect_value = False
        elif arg == "--config":
            out.append(arg)
            expect_value = True
        elif arg.startswith("--config="):
            out.append("--config=" + resolve_config(arg.split("=", 1)[1]))
        else:
            out.append(arg)
    return out


class NFYCLI(LightningCLI):
    """LightningCLI for nfy: subclass mode, no subcommands, shipped configs by name.

    Args:
        args: command-line arguments (``None`` reads ``sys.argv``); tests pass a list.
        **kwargs: forwarded to :class:`LightningCLI` (``trainer_defaults`` ...).
    """

    def __init__(self, args: Optional[Sequence[str]] = None, **kwargs: Any) -> None:
        raw = list(sys.argv[1:] if args is None else args)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(
            NFYLitModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            run=False,
            args=resolve_config_args(raw),
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """``--ckpt_path`` (run=False has no fit subcommand to carry it) and the data -> net links."""
        parser.add_argument("--ckpt_path", type=Optional[str], default=None, help="checkpoint to resume from")
        for name in LINKED_FROM_DATA:
            parser.link_arguments("data", f"model.init_args.net.init_args.{name}", compute_fn=_DataValue(name),
                                  apply_on="instantiate")


class _DataValue:
    """Reads one shared value off the instantiated DataModule for a link into the network.

    The value is the DataModule's attribute of that name, else its preprocessing config's (image
    size), else that of the first DataModule it combines (``CombinedDataModule.modules``).
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, data: LightningDataModule) -> Any:
        for source in (data, *getattr(data, "modules", {}).values()):
            for holder in (source, getattr(source, "config", None)):
                value = getattr(holder, self.name, None)
                if value is not None:
                    return value
        raise ValueError(f"{type(data).__name__} exposes no {self.name!r}; the network takes its {self.name} "
                         f"from the DataModule (experiments.fit.LINKED_FROM_DATA)")


def merged_config(*configs: str) -> dict[str, Any]:
    """The YAML ``configs`` (paths or shipped names) deep-merged left to right, as plain dicts.

    For tools that need one part of a run's config without building the rest (the network of
    ``ete.yaml`` without its datasets); the CLI itself merges with jsonargparse.
    """
    merged: dict[str, Any] = {}
    for config in configs:
        with open(resolve_config(config)) as handle:
            _deep_merge(merged, yaml.safe_load(handle) or {})
    return merged


def build_network(*configs: str, **overrides: Any) -> torch.nn.Module:
    """Instantiate ``model.init_args.net`` of the merged ``configs``, init args updated by ``overrides``."""
    net = merged_config(*configs)["model"]["init_args"]["net"]
    net = {"class_path": net["class_path"], "init_args": {**net.get("init_args", {}), **overrides}}
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--net", type=torch.nn.Module)
    return parser.instantiate_classes(parser.parse_object({"net": net})).net


def _deep_merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


def main(args: Optional[Sequence[str]] = None) -> NFYCLI:
    """Parse, build, and fit; returns the CLI (model, datamodule, trainer) for callers."""
    cli = NFYCLI(args=args)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.get("ckpt_path"))
    return cli


if __name__ == "__main__":
    main()
