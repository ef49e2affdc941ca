"""Training the SSL-UVOS block on the frozen ViT's cached tokens (cache_tokens): the same
block as training on the frames (colour augmentation off), and clear errors otherwise."""

from __future__ import annotations

import warnings

import pytest
import torch

from vislearn.core.errors import VislearnError
from vislearn.data.synthetic.motion import moving_sprite_videos
from vislearn.models import create_backbone
from vislearn.tasks.vos.data import UVOSClipDataset
from vislearn.tasks.vos.features import ViTKeyFeatures, cache_tokens
from vislearn.tasks.vos.run import train_uvos

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = {"accelerator": "cpu", "devices": 1, "log_every_n_steps": 1}
NO_DROP = {"drop": 0.0, "attn_drop": 0.0}


def _train(videos, vit, out, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_uvos(
            videos, vit, out, epochs=2, batch_size=2, resolution=(32, 32), samples_per_epoch=4,
            num_workers=0, lr=1e-3, progress=False, trainer_kwargs=CPU, module_kwargs=NO_DROP,
            **kw,
        )  # fmt: skip


def test_cached_tokens_train_the_same_block(tmp_path):
    torch.manual_seed(0)
    vit = create_backbone("vit_mini", in_chans=3, img_size=32, patch_size=8)
    clips = moving_sprite_videos(4, frames=6, size=32, seed=0, distractors=1).clips
    tokens = cache_tokens(ViTKeyFeatures(vit), clips, batch_size=5)
    assert tokens.shape == (4, 6, 17, 128)
    keys, cls, _ = ViTKeyFeatures(vit)(clips[1, 2:3].float() / 255)
    torch.testing.assert_close(tokens[1, 2], torch.cat([cls, keys[0]]), rtol=1e-5, atol=1e-5)
    ds = UVOSClipDataset(tokens, (32, 32), 3, 2, 4, seed=0)
    assert ds.cached_tokens and ds[0].shape == (3, 17, 128)
    assert UVOSClipDataset(clips, (32, 32), 3, 2, 4, seed=0).lengths == ds.lengths

    from_frames = _train(clips, vit, tmp_path / "frames", augment=False)
    from_tokens = _train(tokens, vit, tmp_path / "tokens", augment=False)
    for k, v in from_frames.state_dict().items():
        torch.testing.assert_close(from_tokens.state_dict()[k], v, rtol=1e-4, atol=1e-5)

    with pytest.raises(VislearnError, match="augment"):
        _train(tokens, vit, tmp_path / "aug", augment=True)
    with pytest.raises(VislearnError, match="wide"):
        _train(tokens[..., :64].contiguous(), vit, tmp_path / "wide", augment=False)
    assert not (tmp_path / "aug").exists() and not (tmp_path / "wide").exists()
