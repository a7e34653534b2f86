"""Pretrained feature networks of the video metrics, loaded only when a metric asks for them.

- :mod:`metrics.features.inception`: FID Inception-v3 (pytorch-fid port), 2048-d pool3.
- :mod:`metrics.features.i3d`: I3D Kinetics-400 TorchScript (StyleGAN-V export), 400-d logits.
- :mod:`metrics.features.pips`: PIPs++ point tracker for FVMD (network code from a module the
  user provides, weights from the registry).
"""
