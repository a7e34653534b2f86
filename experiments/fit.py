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
* Where a run writes: ``trainer.default_root_dir``, when given, is the root of everything (it
  replaces the logger's ``save_dir``); otherwise the logger's ``save_dir`` is (``outputs/`` in the
  shipped configs). Logs, ``config.yaml`` and checkpoints go to ``<root>/<logger name>/version_N/``,
  checkpoints in its ``checkpoints/`` (without a logger: ``<default_root_dir>/checkpoints/``;
  a ModelCheckpoint ``dirpath`` overrides this).
* ``last.ckpt`` (:class:`~callbacks.LastStateCheckpoint` in the shipped configs) holds the state
  where training stopped: at ``max_steps``/``max_epochs``/``max_time``, on Ctrl-C and on SIGTERM
  (an error leaves the last save before it).
* ``--ckpt_path last.ckpt`` resumes a run (weights, optimiser, scheduler, loop counters and RNG;
  exactly so from an epoch-end checkpoint). The resume rule: ``max_steps`` and ``max_epochs`` count
  the whole training (the counters are restored), ``max_time`` counts this run only (the elapsed
  time is not restored); the limits that apply are logged (:class:`~callbacks.ResumeLimitsCallback`,
  added to every run). A resume writes into a new ``version_N``.
* A ``--config`` or ``--ckpt_path`` file that cannot be used stops the run before anything is
  written, with one line naming the file and the problem and exit code 2 (``--debug``: the traceback).
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from callbacks.checkpoint import ResumeLimitsCallback
from lightning_modules import NFYLitModule
from lightning_modules.checkpoint import CheckpointError, check_checkpoint
from lightning_modules.networks.presets import LINKED_FROM_DATA

log = logging.getLogger(__name__)

CONFIG_DIR: Path = Path(__file__).resolve().parent / "configs"
"""Folder of the shipped configs; ``--config`` resolves bare names against it."""
LIGHTNING_CKPT_NAMES: tuple[str, ...] = ("last", "best", "hpc")
"""``--ckpt_path`` values that Lightning resolves itself (not files checked up front)."""


class ConfigError(ValueError):
    """A ``--config`` file that cannot be used; the message names the file and the problem."""


def resolve_config(value: str) -> str:
    """``value`` if it is an existing path, else ``experiments/configs/<value>`` when that exists.

    The file must be readable UTF-8 YAML holding a mapping (or nothing): checked here, so that a
    bad file gives one line rather than the parser's usage text.

    Raises:
        ConfigError: neither exists (names the value and the folder searched), or the file is a
            folder, unreadable, not UTF-8, not YAML, or not a mapping.
    """
    path = Path(value)
    if not path.exists() and (CONFIG_DIR / value).is_file():
        path = CONFIG_DIR / value
    elif not path.exists():
        names = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"--config {value!r}: no such file, nor in {CONFIG_DIR} (which holds {names})")
    _check_config_file(path)
    return str(path)


def _check_config_file(path: Path) -> None:
    def fail(problem: str) -> ConfigError:
        return ConfigError(f"--config {str(path)!r}: {problem}")

    if path.is_dir():
        raise fail("is a folder, not a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise fail(f"is not UTF-8 text (byte {err.start})") from err
    except OSError as err:
        raise fail(f"cannot be read ({err.strerror or err})") from err
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise fail(f"is not valid YAML ({where}{getattr(err, 'problem', None) or err})") from err
    if content is not None and not isinstance(content, dict):
        raise fail(f"expected a YAML mapping of sections (trainer:, model:, data: ...), got a "
                   f"{type(content).__name__}")


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
        defaults = dict(kwargs.pop("trainer_defaults", None) or {})
        given = defaults.get("callbacks") or []
        # persistent: added whatever the configs list (the resume rule of the module docstring)
        defaults["callbacks"] = [*(given if isinstance(given, list) else [given]), ResumeLimitsCallback()]
        kwargs["trainer_defaults"] = defaults
        super().__init__(
            NFYLitModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            run=False,
            args=raw,
            **kwargs,
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse (bare config names resolved), then check ``--ckpt_path`` before anything is seeded or built.

        Raises:
            ConfigError: a ``--config`` file that cannot be used.
            CheckpointError: a ``--ckpt_path`` file that cannot resume training (nothing is created on disk).
        """
        with warnings.catch_warnings():
            # args is sys.argv or a caller's list, never a mix of the two that Lightning warns about
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            super().parse_arguments(parser, resolve_config_args(args))
        ckpt_path = self.config.get("ckpt_path")
        if ckpt_path and ckpt_path not in LIGHTNING_CKPT_NAMES and "://" not in ckpt_path:
            check_checkpoint(ckpt_path, resumable=True)

    def before_instantiate_classes(self) -> None:
        """A given ``trainer.default_root_dir`` becomes the logger's ``save_dir`` (the folder rule)."""
        trainer = self.config.trainer
        root = trainer.get("default_root_dir")
        loggers = trainer.get("logger")
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init_args = getattr(logger, "init_args", None)  # a class_path config; True/False/None have none
            if root is not None and init_args is not None and "save_dir" in init_args:
                if init_args.save_dir not in (None, root):
                    rank_zero_info(f"trainer.default_root_dir {root} replaces the logger's save_dir {init_args.save_dir}")
                init_args.save_dir = root

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """``--ckpt_path`` (run=False has no fit subcommand to carry it), ``--debug`` and the data -> net links."""
        parser.add_argument("--ckpt_path", type=Optional[str], default=None, help="checkpoint to resume from")
        parser.add_argument("--debug", action="store_true",
                            help="show the traceback of a bad --config or --ckpt_path instead of one line")
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
    return build_part("net", *configs, **overrides)


def build_part(name: str, *configs: str, **overrides: Any) -> Any:
    """Instantiate the ``class_path`` argument ``model.init_args.<name>`` of the merged ``configs``
    (``net``, ``train_scheduler`` ...), its init args updated by ``overrides``."""
    part = merged_config(*configs)["model"]["init_args"][name]
    part = {"class_path": part["class_path"], "init_args": {**part.get("init_args", {}), **overrides}}
    module, _, cls = part["class_path"].rpartition(".")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--part", type=getattr(importlib.import_module(module), cls))
    return parser.instantiate_classes(parser.parse_object({"part": part})).part


def _deep_merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


def main(args: Optional[Sequence[str]] = None) -> NFYCLI:
    """Parse, build, and fit; returns the CLI (model, datamodule, trainer) for callers.

    Raises:
        SystemExit: code 2 after one line on stderr for a bad ``--config`` or ``--ckpt_path``
            (with ``--debug``: the :class:`ConfigError` / :class:`CheckpointError` itself).
    """
    args = list(sys.argv[1:] if args is None else args)
    try:
        cli = NFYCLI(args=args)
    except (ConfigError, CheckpointError) as err:
        if "--debug" in args:
            raise
        option = "--ckpt_path: " if isinstance(err, CheckpointError) else ""
        sys.stderr.write(f"error: {option}{err}\n")
        raise SystemExit(2) from None
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.get("ckpt_path"))
    return cli


if __name__ == "__main__":
    main()
