"""FD / classifier metrics of the DiT caching benchmark (vislearn.tasks.dit.fid)."""

import numpy as np
import pytest
import scipy.linalg
import torch

from vislearn.core.errors import VislearnError
from vislearn.tasks.dit.fid import (
    FeatureClassifier,
    class_consistency,
    feature_stats,
    frechet_distance,
    load_classifier,
    save_classifier,
    train_feature_classifier,
)


def _spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_matches_scipy_sqrtm_reference():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = _spd(rng, 6), _spd(rng, 6)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    ref = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * covmean))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)


def test_frechet_distance_one_dimensional_closed_form_and_zero():
    # N(m1, a^2) vs N(m2, b^2): (m1 - m2)^2 + (a - b)^2
    fd = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]]))
    assert fd == pytest.approx(9.0 + 1.0)
    rng = np.random.default_rng(1)
    s = _spd(rng, 5)
    assert frechet_distance(np.ones(5), s, np.ones(5), s) == pytest.approx(0.0, abs=1e-9)


def test_feature_stats_and_class_consistency():
    x = torch.randn(50, 3, dtype=torch.float64)
    mu, cov = feature_stats(x)
    np.testing.assert_allclose(mu, x.mean(0).numpy())
    np.testing.assert_allclose(cov, np.cov(x.numpy(), rowvar=False))
    with pytest.raises(VislearnError):
        feature_stats(torch.randn(1, 3))
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    assert class_consistency(logits, torch.tensor([0, 1, 1, 1])) == 0.75


def test_classifier_learns_and_round_trips_through_safetensors(tmp_path, single_thread):
    # two classes that differ in brightness: learnable in one short epoch
    g = torch.Generator().manual_seed(0)
    y = torch.arange(256) % 2
    x = (torch.rand(256, 1, 16, 16, generator=g) * 100 + 150 * y.view(-1, 1, 1, 1)).to(torch.uint8)
    model = train_feature_classifier(x, y, epochs=4, batch_size=32, progress=False)
    feats, logits = model.embed(x)
    assert feats.shape == (256, model.backbone.num_features)
    assert class_consistency(logits, y) > 0.9
    path = tmp_path / "clf.safetensors"
    save_classifier(model, path, test_top1=99.0)
    loaded, info = load_classifier(path)
    assert info == {"test_top1": 99.0}
    torch.testing.assert_close(loaded.embed(x)[1], logits)


def test_load_classifier_rejects_other_files(tmp_path):
    from safetensors.torch import save_file

    bad = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(bad))
    with pytest.raises(VislearnError, match="not a vislearn feature classifier"):
        load_classifier(bad)
    with pytest.raises(VislearnError, match="not found"):
        load_classifier(tmp_path / "missing.safetensors")
    assert isinstance(FeatureClassifier(3), torch.nn.Module)
