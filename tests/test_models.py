"""Every registered model gets these tests for free (parametrised over list_models())."""

from __future__ import annotations

import pytest
import torch

from mnist_cnn import create_model, list_models
from mnist_cnn.errors import ConfigError
from mnist_cnn.models.files import load_model, save_model
from mnist_cnn.models.registry import count_params

META = {"normalisation": {"mean": 0.13, "std": 0.31}, "classes": [str(i) for i in range(10)], "dataset": "mnist"}


def test_seed_models_have_the_seeds_parameter_counts():
    assert count_params(create_model("model1")) == 110_474
    assert count_params(create_model("model2")) == 119_850


@pytest.mark.parametrize("name", list_models())
def test_output_shape_and_finite(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    out = model(torch.randn(4, 1, 28, 28))
    assert out.shape == (4, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list_models())
def test_one_training_step_changes_weights_and_lowers_loss(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    x, y = torch.randn(16, 1, 28, 28), torch.arange(16) % 10
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    losses = []
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("name", list_models())
def test_save_load_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name).eval()
    save_model(tmp_path / "m.safetensors", model, META)
    loaded, meta = load_model(tmp_path / "m.safetensors")
    assert meta["arch"]["name"] == name and meta["normalisation"] == META["normalisation"]
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(model(x), loaded(x))


def test_overrides_are_recorded_and_rebuilt(tmp_path):
    model = create_model("convnet", channels=[8, 16], head=[32], batchnorm=True, dropout=0.1)
    assert model.arch == {
        "name": "convnet",
        "kwargs": {"channels": [8, 16], "head": [32], "batchnorm": True, "dropout": 0.1},
    }
    save_model(tmp_path / "c.safetensors", model, META)
    loaded, _ = load_model(tmp_path / "c.safetensors")
    assert count_params(loaded) == count_params(model)


def test_unknown_model_and_option_are_clear_errors():
    with pytest.raises(ConfigError, match="valid models: .*model1"):
        create_model("nope")
    with pytest.raises(ConfigError, match="no option"):
        create_model("model1", widht=3)
    with pytest.raises(ConfigError, match="shrinks"):
        create_model("convnet", channels=[8] * 6, pool=True)


def test_registering_a_model_is_one_decorated_function():
    from mnist_cnn.models.convnet import ConvNet
    from mnist_cnn.models.registry import _REGISTRY, register_model

    @register_model
    def tiny_test_net(num_classes: int = 10):
        """A test-only model."""
        return ConvNet((4,), head=(), num_classes=num_classes)

    try:
        assert "tiny_test_net" in list_models()
        assert create_model("tiny_test_net")(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
    finally:
        _REGISTRY.pop("tiny_test_net")


@pytest.mark.parametrize("name", ["model1", "model2"])
def test_keras_init_is_glorot_uniform_with_zero_biases(name):
    import math

    import torch

    torch.manual_seed(0)
    m = create_model(name, init="keras")
    layers = [x for x in m.modules() if isinstance(x, (torch.nn.Conv2d, torch.nn.Linear))]
    for layer in layers:
        assert torch.count_nonzero(layer.bias) == 0
        w = layer.weight
        fan_in = w[0].numel()
        fan_out = w.shape[0] * (w[0, 0].numel() if w.dim() > 2 else 1)
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound  # uniform over +-bound
    torch.manual_seed(0)  # the default is the seed's Keras init (issue 14); torch's stays an option
    default = create_model(name)
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), m.state_dict().values()))
    torch_init = create_model(name, init="torch")
    assert any(torch.count_nonzero(x.bias) > 0 for x in torch_init.modules() if isinstance(x, torch.nn.Linear))
    with pytest.raises(ConfigError, match="init must be 'torch' or 'keras'"):
        create_model(name, init="he")


def test_pool_before_relu_is_the_same_function_and_keeps_parameter_names():
    """Without BatchNorm the pool runs before the ReLU (a quarter of the elementwise work):
    relu(max(a, b)) == max(relu(a), relu(b)), so outputs and gradients equal the textbook order's,
    and the parameter names (old model files) are unchanged."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    m = create_model("model1", dropout=0.0).eval()
    assert [k for k in m.state_dict() if k.startswith("features")] == [
        f"features.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")
    ]
    convs = [x for x in m.features if isinstance(x, torch.nn.Conv2d)]
    x = torch.randn(4, 1, 28, 28, requires_grad=True)
    h = x
    for conv in convs:  # the seed's order: conv -> ReLU -> pool
        h = F.max_pool2d(F.relu(conv(h)), 2)
    textbook = m.classifier(h.flatten(1))
    (g1,) = torch.autograd.grad(textbook.sum(), x)
    ours = m(x)
    (g2,) = torch.autograd.grad(ours.sum(), x)
    assert torch.allclose(ours, textbook, atol=1e-6) and torch.allclose(g1, g2, atol=1e-6)


def test_pool_first_puts_the_pool_between_conv_and_batchnorm():
    import torch

    plain = [type(x).__name__ for x in create_model("fastnet").features][:4]
    first = [type(x).__name__ for x in create_model("fastnet", pool_first=True).features][:4]
    assert plain == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    assert first == ["Conv2d", "MaxPool2d", "BatchNorm2d", "ReLU"]
    out = create_model("fastnet", pool_first=True)(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10)
