"""Diffusion schedulers of the video denoiser: diffusers' DDPM for training, DDIM or DPM-Solver++ for sampling.

Small factories: the default training schedule of ``NFYLitModule`` (the configs spell it out as
``class_path: diffusers.DDPMScheduler``) and the samplers ``NFYPipeline`` derives from it.
"""

from __future__ import annotations

from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")
SAMPLERS: tuple[str, ...] = ("ddim", "dpm++")
"""Sampler names: DDIM (the paper's, about 25 steps) and DPM-Solver++ (2nd order, about 10 steps)."""


def training_scheduler(num_train_timesteps: int = 1000, prediction_type: str = "epsilon",
                       beta_schedule: str = "scaled_linear") -> DDPMScheduler:
    """DDPM noise schedule of Stable Diffusion 1.5 (scaled-linear betas 0.00085 .. 0.012) for training.

    ``clip_sample`` is off: latents are not bounded to [-1, 1].

    Raises:
        ValueError: an unknown ``prediction_type`` or ``num_train_timesteps`` < 2.
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    if num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be >= 2, got {num_train_timesteps}")
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_start=0.00085, beta_end=0.012,
                         beta_schedule=beta_schedule, prediction_type=prediction_type, clip_sample=False)


def sampling_scheduler(train: DDPMScheduler, sampler: str = "ddim") -> DDIMScheduler | DPMSolverMultistepScheduler:
    """A deterministic sampler on the same noise schedule (and prediction type) as ``train``.

    ``"ddim"``: DDIM, eta = 0. The last step returns the clean estimate (``set_alpha_to_one``):
    Stable Diffusion's sampler re-adds the noise of timestep 0 (std 0.03), invisible on SD's
    unit-variance latents but not on the small latents of a random VAE.

    ``"dpm++"``: DPM-Solver++ (Lu et al. 2022), second-order multistep, which reaches DDIM's quality
    in about 10 steps instead of 25; its last step likewise lands on the clean estimate
    (``final_sigmas_type="zero"``), with first-order final steps (``lower_order_final``) that keep
    so few steps stable.

    Raises:
        ValueError: an unknown ``sampler`` (see :data:`SAMPLERS`).
    """
    if sampler == "ddim":
        return DDIMScheduler.from_config(train.config, clip_sample=False, set_alpha_to_one=True, steps_offset=1)
    if sampler == "dpm++":
        return DPMSolverMultistepScheduler.from_config(
            train.config, algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True,
            final_sigmas_type="zero", variance_type=None, thresholding=False)
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")


__all__ = ["PREDICTION_TYPES", "SAMPLERS", "sampling_scheduler", "training_scheduler"]
