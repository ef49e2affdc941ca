"""Loading diffusers-format DiT checkpoints and a class-conditional CFG sampler.

Used by ``vislearn dit sample`` / ``vislearn dit bench``; the cache itself works with any
sampling loop or pipeline.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vislearn.core.errors import VislearnError

__all__ = ["SCHEDULERS", "load_transformer", "make_scheduler", "sample_class_conditional"]

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "ddpm": "DDPMScheduler",
    "heun": "HeunDiscreteScheduler",  # two model calls per step (2 N - 1 in all)
}


def _diffusers():
    try:
        import diffusers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise VislearnError("DiT commands need diffusers: pip install 'vislearn[dit]'") from exc
    return diffusers


def _transformer_dir(path: Path) -> Path:
    if (path / "config.json").is_file():
        return path
    if (path / "transformer" / "config.json").is_file():
        return path / "transformer"
    raise VislearnError(
        f"{path}: not a diffusers checkpoint folder (no config.json or transformer/config.json)"
    )


def load_transformer(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = torch.float32,
) -> nn.Module:
    """A diffusers transformer from a model folder or a pipeline folder (``transformer/``),
    cast to ``dtype`` (default float32, so half-precision files run on CPU; ``None`` keeps
    the stored dtype)."""
    path = Path(path)
    if not path.exists():
        raise VislearnError(f"{path}: no such model folder")
    tdir = _transformer_dir(path)
    try:
        cls_name = json.loads((tdir / "config.json").read_text())["_class_name"]
    except (OSError, ValueError, KeyError) as exc:
        raise VislearnError(f"{tdir / 'config.json'}: unreadable or without _class_name") from exc
    if "Transformer2D" not in cls_name:
        raise VislearnError(
            f"{path} holds a {cls_name}, not a DiT/PixArt transformer (DiTTransformer2DModel, "
            "PixArtTransformer2DModel); `vislearn dit` samples class-conditional DiTs"
        )
    diffusers = _diffusers()
    cls = getattr(diffusers, cls_name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise VislearnError(f"{tdir}: unknown diffusers model class {cls_name!r}")
    try:
        model = cls.from_pretrained(tdir, low_cpu_mem_usage=False, torch_dtype=dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        raise VislearnError(f"{tdir}: cannot load {cls_name}: {exc}".splitlines()[0]) from exc
    return model.to(device).eval()


def make_scheduler(name: str, model_path: str | Path | None = None) -> Any:
    """A diffusers scheduler by short name; a ``scheduler/`` folder next to the transformer
    provides its training configuration (betas, prediction type). Without one, the default
    configuration with 1000 training steps and ``clip_sample=False`` where the scheduler has
    it (DDIM, DDPM): diffusers' default clips the predicted sample to [-1, 1], which is wrong
    for latent DiTs."""
    if name not in SCHEDULERS:
        raise VislearnError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    cls = getattr(_diffusers(), SCHEDULERS[name])
    if model_path is not None:
        cfg = Path(model_path) / "scheduler" / "scheduler_config.json"
        if cfg.is_file():
            return cls.from_config(json.loads(cfg.read_text()))
    kwargs: dict[str, Any] = {"num_train_timesteps": 1000}
    if "clip_sample" in inspect.signature(cls.__init__).parameters:
        kwargs["clip_sample"] = False
    return cls(**kwargs)


@torch.no_grad()
def sample_class_conditional(
    model: nn.Module,
    scheduler: Any,
    labels: torch.Tensor,
    num_steps: int,
    guidance_scale: float = 4.0,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample a class-conditional DiT with batched classifier-free guidance.

    The model input is ``[x, x]`` with labels ``[labels, null]`` (null = ``num_embeds_ada_norm``,
    the extra row of diffusers' label table), as in diffusers' ``DiTPipeline``; a learned-sigma
    output (``out_channels == 2 * in_channels``) is reduced to its epsilon part.
    ``guidance_scale <= 1`` runs the conditional branch only. The model is called once per
    entry of ``scheduler.timesteps`` (twice per step with Heun). Returns the final
    latent/image.
    """
    cfg = model.config
    device = next(model.parameters()).device
    labels = labels.to(device)
    shape = (labels.shape[0], cfg.in_channels, cfg.sample_size, cfg.sample_size)
    scheduler.set_timesteps(num_steps, device=device)
    if noise is None:
        noise = torch.randn(shape, generator=generator, device=device)
    x = noise.to(device) * scheduler.init_noise_sigma
    use_cfg = guidance_scale > 1
    if use_cfg:
        null = torch.full_like(labels, int(cfg.num_embeds_ada_norm))
        labels = torch.cat([labels, null])
    for t in scheduler.timesteps:
        inp = torch.cat([x, x]) if use_cfg else x
        inp = scheduler.scale_model_input(inp, t)
        tt = torch.as_tensor(t, device=device).reshape(1).expand(inp.shape[0])
        out = model(inp, timestep=tt, class_labels=labels).sample
        if out.shape[1] == 2 * cfg.in_channels:
            out = out[:, : cfg.in_channels]
        if use_cfg:
            cond, uncond = out.chunk(2)
            out = uncond + guidance_scale * (cond - uncond)
        x = scheduler.step(out, t, x).prev_sample
    return x
