"""``vislearn dit ...``: sample and benchmark diffusers DiT checkpoints with feature caching.

vislearn dit sample --model DIR --cache duca --steps 50 --cfg 4 --out grid.png
vislearn dit bench  --model DIR --cache duca --interval 3 --steps 50 --cfg 4 --json row.json
vislearn dit train  --data fmnist --out runs/dit --epochs 20      (exports runs/dit/model)
vislearn dit classifier --data fmnist --out runs/dit/classifier.safetensors   (for FD)

This module imports nothing heavy at import time (the main CLI builds its parser from it).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

from vislearn.core.config import add_config_args

__all__ = ["DIT_FLAGS", "add_dit_parser", "dit_config", "run_dit"]


def _cache_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="diffusers model or pipeline folder")
    p.add_argument(
        "--cache",
        help="none, fora, toca, duca, duca_dit, toca_dit, duca_pixart, toca_pixart",
    )
    p.add_argument("--interval", type=int, help="cache interval N")
    p.add_argument("--warmup", type=int, help="leading full steps")
    p.add_argument("--score", choices=["vnorm", "vnorm_high", "attention", "random"])
    p.add_argument("--fresh-ratio", type=float, help="fraction of tokens recomputed")
    p.add_argument("--steps", type=int, help="sampling steps (default 50)")
    p.add_argument("--cfg", type=float, help="guidance scale (<= 1: no CFG)")
    p.add_argument("--scheduler", help="ddim, euler, dpm, ddpm, heun (default ddim)")
    p.add_argument("--n", type=int, help="number of images (default 16)")
    p.add_argument("--classes", help="comma-separated class ids (default: 0, 1, ... cycled)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu (default), cuda, ...")


def _config_args(p: argparse.ArgumentParser) -> None:
    add_config_args(p, "see vislearn.tasks.dit.config")


def add_dit_parser(sub: Any) -> None:
    """Register ``vislearn dit {sample,bench}`` on the main CLI's sub-parsers."""
    dit = sub.add_parser("dit", help="DiT sampling with training-free feature caching (DuCa)")
    dsub = dit.add_subparsers(dest="dit_command", required=True, metavar="DIT_COMMAND")
    sa = dsub.add_parser("sample", help="sample a class-conditional DiT into an image grid")
    _cache_args(sa)
    _config_args(sa)
    sa.add_argument("--out", required=True, help="output PNG grid")
    be = dsub.add_parser("bench", help="cached vs uncached: speed, FLOPs, deviation")
    _cache_args(be)
    _config_args(be)
    be.add_argument("--repeats", type=int, help="interleaved timing repeats")
    be.add_argument("--json", help="also write the result row to this JSON file")
    tr = dsub.add_parser("train", help="train a small class-conditional pixel DiT")
    _config_args(tr)
    tr.add_argument("--data", help="fmnist-mini (default), fmnist, folder")
    tr.add_argument("--data-dir", help="where the Fashion-MNIST files are ($VISLEARN_DATA)")
    tr.add_argument("--out", required=True, help="run folder; the model goes to OUT/model")
    tr.add_argument("--epochs", type=int)
    tr.add_argument("--max-steps", type=int, help="stop after this many steps")
    tr.add_argument("--batch-size", type=int)
    tr.add_argument("--image-size", type=int)
    tr.add_argument("--patch-size", type=int)
    tr.add_argument("--depth", type=int, help="transformer blocks (default 6)")
    tr.add_argument("--heads", type=int)
    tr.add_argument("--head-dim", type=int, help="hidden = heads * head-dim")
    tr.add_argument("--lr", type=float)
    tr.add_argument("--seed", type=int)
    tr.add_argument("--accelerator", help="cpu, gpu, ... (Lightning)")
    tr.add_argument("--devices", help="devices per node (Lightning)")
    tr.add_argument("--precision", help="32-true, bf16-mixed, ...")
    cl = dsub.add_parser(
        "classifier", help="train the feature classifier that FD / class consistency use"
    )
    _config_args(cl)
    cl.add_argument("--data", help="fmnist-mini (default), fmnist, folder")
    cl.add_argument("--data-dir", help="where the Fashion-MNIST files are ($VISLEARN_DATA)")
    cl.add_argument("--out", required=True, help="output .safetensors file")
    cl.add_argument("--image-size", type=int, help="the DiT's sample size")
    cl.add_argument("--channels", type=int)
    cl.add_argument("--epochs", type=int)
    cl.add_argument("--seed", type=int)


def _policy_overrides(a: argparse.Namespace) -> dict:
    over = {}
    for key in ("interval", "warmup", "score", "fresh_ratio"):
        value = getattr(a, key)
        if value is not None:
            over[key] = value
    return over


def _setup(a: argparse.Namespace):
    import torch

    from vislearn.accel.apply import DuCaCache
    from vislearn.accel.sampling import load_transformer, make_scheduler
    from vislearn.core.errors import VislearnError

    if a.steps < 1 or a.n < 1:
        raise VislearnError("--steps and --n must be positive")
    model = load_transformer(a.model, a.device)
    cfg = model.config
    n_classes = getattr(cfg, "num_embeds_ada_norm", None)
    if not n_classes or getattr(cfg, "caption_channels", None):
        raise VislearnError(
            f"{a.model}: {type(model).__name__} is not a class-conditional DiT; `vislearn dit` "
            "samples class-conditional DiT transformers only (text-conditioned PixArt models "
            "need prompt embeddings)"
        )
    if a.classes:
        try:
            ids = [int(c) for c in a.classes.split(",") if c.strip()]
        except ValueError as exc:
            raise VislearnError(f"--classes: not a list of integers: {a.classes!r}") from exc
        bad = [c for c in ids if not 0 <= c < n_classes]
        if bad or not ids:
            raise VislearnError(f"--classes must be ids in [0, {n_classes}), got {a.classes!r}")
    else:
        ids = list(range(n_classes))
    labels = torch.tensor([ids[i % len(ids)] for i in range(a.n)])
    scheduler = make_scheduler(a.scheduler, Path(a.model))
    # planned by model calls: the scheduler's timesteps (Heun calls the model twice per step)
    cache = DuCaCache(
        model, a.cache, num_steps=a.steps, scheduler=scheduler, **_policy_overrides(a)
    )
    gen = torch.Generator(device=a.device).manual_seed(a.seed)
    noise = torch.randn(
        a.n, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=gen, device=a.device
    )
    return model, scheduler, cache, labels, noise


def _decode(model_dir: str, x):
    import torch

    vae_dir = Path(model_dir) / "vae"
    if vae_dir.is_dir():
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(vae_dir).to(x.device).eval()
        with torch.no_grad():
            x = vae.decode(x / vae.config.scaling_factor).sample
    return ((x.clamp(-1, 1) + 1) / 2).cpu()


def cmd_sample(a: argparse.Namespace) -> None:
    from torchvision.utils import save_image

    from vislearn.accel.sampling import sample_class_conditional

    model, scheduler, cache, labels, noise = _setup(a)
    with cache:
        x = sample_class_conditional(model, scheduler, labels, a.steps, a.cfg, noise=noise)
        counts = cache.counts()
    images = _decode(a.model, x)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    save_image(images, a.out, nrow=max(1, math.ceil(math.sqrt(len(images)))))
    print(f"vislearn: wrote {a.out} ({len(images)} images; steps: {json.dumps(counts)})")


def cmd_bench(a: argparse.Namespace) -> None:
    from vislearn.accel.metrics import count_flops, flops_ratio, psnr, relative_l2, wall_time
    from vislearn.accel.sampling import sample_class_conditional
    from vislearn.core.utils import write_json

    model, scheduler, cache, labels, noise = _setup(a)

    def run(cached: bool):
        if cached:
            cache.enable()
        try:
            return sample_class_conditional(model, scheduler, labels, a.steps, a.cfg, noise=noise)
        finally:
            if cached:
                counts.update(cache.counts())
                cache.disable()

    counts: dict = {}
    ref, plain_flops = count_flops(run, False)
    out, cached_flops = count_flops(run, True)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(max(1, a.repeats)):
        for cached in (False, True):
            times[cached].append(wall_time(run, cached, device=a.device)[1])
    row = {
        "name": f"vislearn/{a.cache}",
        "speedup_wall": statistics.median(times[False]) / statistics.median(times[True]),
        "flops_ratio": flops_ratio(plain_flops, cached_flops),
        "psnr": psnr(out, ref, data_range=2.0),
        "rel_l2": relative_l2(out, ref),
        "steps": counts,
        "settings": {
            "model": str(a.model),
            "policy": cache.policy.to_dict(),
            "steps": a.steps,
            "cfg": a.cfg,
            "scheduler": a.scheduler,
            "n": a.n,
            "seed": a.seed,
            "repeats": a.repeats,
            "device": a.device,
        },
    }
    print(json.dumps(row))
    if a.json:
        write_json(a.json, row)


def cmd_train(a: argparse.Namespace) -> None:
    from vislearn.tasks.dit.train import train_dit

    devices = int(a.devices) if str(a.devices).isdigit() else a.devices
    _, model_dir = train_dit(
        a.out,
        dataset=a.data,
        data_dir=a.data_dir,
        epochs=a.epochs,
        max_steps=a.max_steps,
        batch_size=a.batch_size,
        seed=a.seed,
        trainer_kwargs={"accelerator": a.accelerator, "devices": devices, "precision": a.precision},
        image_size=a.image_size,
        patch_size=a.patch_size,
        depth=a.depth,
        heads=a.heads,
        head_dim=a.head_dim,
        lr=a.lr,
    )
    print(f"vislearn: wrote {model_dir}")


def _as_tensors(ds):
    """All images (uint8 ``[N, C, H, W]``) and labels of a data set, in memory."""
    import torch

    if hasattr(ds, "images") and getattr(ds, "labels", None) is not None:
        return ds.images, torch.as_tensor(ds.labels)
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([im for im, _ in items]), torch.tensor([int(y) for _, y in items])


def cmd_classifier(a: argparse.Namespace) -> None:

    from vislearn.core.errors import VislearnError
    from vislearn.data.datasets import get_dataset
    from vislearn.tasks.dit.fid import save_classifier, train_feature_classifier

    if not str(a.out).endswith(".safetensors"):
        raise VislearnError("--out must be a .safetensors file")
    train, test = (
        get_dataset(a.data, split, a.data_dir, a.image_size, a.channels)
        for split in ("train", "test")
    )
    if getattr(train, "labels", None) is None:
        raise VislearnError(f"{a.data}: the classifier needs labels (class sub-folders)")
    (x, y), (xt, yt) = _as_tensors(train), _as_tensors(test)
    model = train_feature_classifier(x, y, epochs=a.epochs, seed=a.seed)
    _, logits = model.embed(xt)
    acc = float((logits.argmax(1) == yt).float().mean())
    save_classifier(model, a.out, data=a.data, epochs=a.epochs, test_top1=round(100 * acc, 2))
    print(f"vislearn: wrote {a.out} (test top-1 {100 * acc:.1f}%)")


_SAMPLE_FLAGS: dict[str, str] = {
    "model": "model",
    "cache": "cache.policy",
    "interval": "cache.interval",
    "warmup": "cache.warmup",
    "score": "cache.score",
    "fresh_ratio": "cache.fresh_ratio",
    "steps": "sampler.steps",
    "cfg": "sampler.cfg",
    "scheduler": "sampler.scheduler",
    "n": "sampler.n",
    "classes": "sampler.classes",
    "seed": "seed",
    "device": "device",
    "out": "out",
    "repeats": "repeats",
    "json": "json",
}
_DATA_FLAGS = {"data": "data.dataset", "data_dir": "data.data_dir", "image_size": "data.image_size"}
#: sub-command -> (its defaults in vislearn.tasks.dit.config, flag -> config key)
DIT_FLAGS: dict[str, tuple[str, dict[str, str]]] = {
    "sample": ("DIT_SAMPLE_DEFAULTS", _SAMPLE_FLAGS),
    "bench": ("DIT_SAMPLE_DEFAULTS", _SAMPLE_FLAGS),
    "train": (
        "DIT_TRAIN_DEFAULTS",
        {
            **_DATA_FLAGS,
            "batch_size": "data.batch_size",
            "patch_size": "dit.patch_size",
            "depth": "dit.depth",
            "heads": "dit.heads",
            "head_dim": "dit.head_dim",
            "lr": "dit.lr",
            "epochs": "trainer.max_epochs",
            "max_steps": "trainer.max_steps",
            "accelerator": "trainer.accelerator",
            "devices": "trainer.devices",
            "precision": "trainer.precision",
            "seed": "seed",
            "out": "out",
        },
    ),
    "classifier": (
        "DIT_CLASSIFIER_DEFAULTS",
        {**_DATA_FLAGS, "channels": "data.channels", "epochs": "trainer.max_epochs",
         "seed": "seed", "out": "out"},
    ),
}  # fmt: skip


def dit_config(a: argparse.Namespace) -> dict:
    """The resolved config of ``vislearn dit COMMAND``: its defaults (vislearn.tasks.dit.config)
    <- --config <- flags (:data:`DIT_FLAGS`) <- ``section.key=value`` overrides."""
    from vislearn.core.config import flag_updates, load_config
    from vislearn.tasks.dit import config

    name, flags = DIT_FLAGS[a.dit_command]
    overrides = list(getattr(a, "overrides", [])) + list(getattr(a, "set_overrides", []))
    return load_config(
        getattr(a, "config", None),
        overrides,
        defaults=getattr(config, name),
        **flag_updates(a, flags),
    )


def _as_flags(a: argparse.Namespace, cfg: dict) -> argparse.Namespace:
    """``a`` with every mapped flag set to its resolved config value (the commands read them)."""
    out = argparse.Namespace(**vars(a))
    for flag, key in DIT_FLAGS[a.dit_command][1].items():
        node: Any = cfg
        for part in key.split("."):
            node = node[part]
        setattr(out, flag, node)
    return out


def run_dit(a: argparse.Namespace) -> None:
    from vislearn.core.config import save_config
    from vislearn.core.schema import check_run_settings, validate_config
    from vislearn.tasks.dit import config

    cfg = validate_config(dit_config(a), getattr(config, DIT_FLAGS[a.dit_command][0]))
    if a.dit_command == "train":
        check_run_settings(cfg["trainer"], cfg["out"])
        Path(cfg["out"]).mkdir(parents=True, exist_ok=True)
        save_config(cfg, Path(cfg["out"]) / "config.yaml")
    commands = {
        "sample": cmd_sample,
        "bench": cmd_bench,
        "train": cmd_train,
        "classifier": cmd_classifier,
    }
    commands[a.dit_command](_as_flags(a, cfg))
