"""LightningModules of nfy; the plain networks live in :mod:`lightning_modules.networks`.

``NFYLitModule`` is imported on first use, so that importing the networks (or the pipeline)
does not load Lightning.
"""

from __future__ import annotations

import logging
from typing import Any

# bitsandbytes (the optional 8-bit AdamW), which diffusers imports whenever it is installed, warns on
# CPUs with AVX512-BF16 that an optional kernel package for 4-bit layers is missing; nfy has none.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

__all__ = ["NFYLitModule", "NFYPipeline"]


def __getattr__(name: str) -> Any:
    if name == "NFYLitModule":
        from lightning_modules.nfy_module import NFYLitModule

        return NFYLitModule
    if name == "NFYPipeline":
        from lightning_modules.pipeline import NFYPipeline

        return NFYPipeline
    raise AttributeError(f"module 'lightning_modules' has no attribute {name!r}")
