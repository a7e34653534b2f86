"""Frozen feature networks stay in eval mode without gradients when their holder trains."""

from __future__ import annotations

import torch
from torch import nn

from common.frozen import FrozenModule, KeepsChildrenFrozen, freeze


class _Holder(KeepsChildrenFrozen, nn.Module):
    frozen_children = ("net", "lazy")

    def __init__(self) -> None:
        super().__init__()
        self.net = freeze(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)))
        self.lazy = None  # loaded on first use: skipped while absent
        self.head = nn.Linear(2, 1)


class _Pretrained(FrozenModule):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(2)
        freeze(self)


def test_freeze_returns_the_module_in_eval_mode_without_gradients() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    assert freeze(net) is net
    assert not any(m.training for m in net.modules()) and not any(p.requires_grad for p in net.parameters())


def test_holder_in_train_mode_keeps_its_frozen_children_in_eval_mode() -> None:
    holder = _Holder().train()
    assert holder.training and holder.head.training
    assert not any(m.training for m in holder.net.modules())
    assert all(p.requires_grad for p in holder.head.parameters())


def test_frozen_module_ignores_train() -> None:
    net = _Pretrained().train()
    assert not any(m.training for m in net.modules())
    before = net.norm.running_mean.clone()
    net.norm(torch.randn(4, 2))  # eval mode: the running statistics do not move
    torch.testing.assert_close(net.norm.running_mean, before)
