"""Pretrained networks used as fixed feature extractors: no gradients, always in eval mode.

A feature network left in train mode applies dropout and moves its BatchNorm running
statistics, so its features change from call to call; a module that holds one must keep it
in eval mode even when the holder is switched to train mode (a metric inside a
LightningModule is, at every training epoch).
"""

from __future__ import annotations

from typing import TypeVar

from torch import nn

M = TypeVar("M", bound=nn.Module)


def freeze(module: M) -> M:
    """Stop gradients into ``module`` and put it in eval mode; returns ``module`` itself."""
    module.requires_grad_(False)
    module.eval()
    return module


class FrozenModule(nn.Module):
    """A network that is frozen for good: ``train()`` leaves it in eval mode.

    Subclasses build their layers, then call :func:`freeze` on themselves.
    """

    def train(self, mode: bool = True) -> FrozenModule:
        """Stay in eval mode whatever ``mode`` is."""
        return super().train(False)


class KeepsChildrenFrozen:
    """Mixin for an ``nn.Module`` holding frozen networks: ``train()`` keeps them in eval mode.

    Subclasses name the attributes holding them in :attr:`frozen_children` (an attribute that
    is ``None``, e.g. a network loaded on first use, is skipped) and pass them through
    :func:`freeze` when they are set.
    """

    frozen_children: tuple[str, ...] = ()

    def train(self, mode: bool = True):  # noqa: ANN201 - returns the subclass
        """Switch this module's mode; the frozen children stay in eval mode."""
        super().train(mode)  # type: ignore[misc]
        for name in self.frozen_children:
            child = getattr(self, name, None)
            if child is not None:
                child.eval()
        return self
