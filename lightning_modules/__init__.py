"""LightningModules of nfy; the plain networks live in :mod:`lightning_modules.networks`."""

from lightning_modules.nfy_module import NFYLitModule

__all__ = ["NFYLitModule"]
