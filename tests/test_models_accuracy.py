"""The accuracy stage's architectures and the ConvNet options they use (stride, per-layer padding
and dropout). Registry-wide checks (output shape, a training step, save/load) are in test_models.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mnist_cnn.errors import ConfigError
from mnist_cnn.models.convnet import ConvNet
from mnist_cnn.models.registry import count_params, create_model, model_entry
from tests.helpers import tiny_run


def _feature_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    """Output shape after every conv layer of a ConvNet's feature stack."""
    shapes = []
    for layer in model.features:
        x = layer(x)
        if isinstance(layer, nn.Conv2d):
            shapes.append(tuple(x.shape[1:]))
    return shapes


def test_bncnn_matches_its_description():
    model = create_model("bncnn").eval()
    assert f"{count_params(model):,}" in model_entry("bncnn").description
    shapes = _feature_shapes(model, torch.zeros(2, 1, 28, 28))
    # two valid 3x3 convs, then a strided 5x5 halves the map; 4x4 conv ends at 1x1
    assert shapes == [(32, 26, 26), (32, 24, 24), (32, 12, 12), (64, 10, 10), (64, 8, 8), (64, 4, 4), (128, 1, 1)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 7
    assert sum(isinstance(m, nn.Dropout2d) for m in model.modules()) == 3


def test_bncnn_width_and_dropout_options():
    wide = create_model("bncnn", width=48, dropout=0.2)
    assert count_params(wide) > 2 * count_params(create_model("bncnn"))
    assert {m.p for m in wide.modules() if isinstance(m, nn.Dropout2d)} == {0.2}
    assert wide(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_bncnn_dropout_acts_only_in_training():
    model = create_model("bncnn")
    x = torch.randn(8, 1, 28, 28)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, model(x))


def test_convnet_strided_same_padding_halves_rounding_up():
    net = ConvNet((8, 8), kernel_size=(5, 3), stride=(2, 2), padding="same", pool=False, head=())
    assert _feature_shapes(net, torch.zeros(2, 1, 28, 28)) == [(8, 14, 14), (8, 7, 7)]


def test_convnet_defaults_are_unchanged_by_the_new_options():
    # the per-layer options default to the old behaviour: same layers, same parameter names
    old_style = ConvNet((32, 64, 128), head=(128,), dropout=0.3)
    explicit = ConvNet((32, 64, 128), head=(128,), dropout=0.3, stride=1, padding=["valid"] * 3, conv_dropout=[0.0] * 3)
    assert list(old_style.state_dict()) == list(explicit.state_dict())
    assert count_params(create_model("model1")) == 110_474


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"channels": [8, 8], "padding": ["same"]}, "padding has 1 entries"),
        ({"channels": [8, 8], "padding": ["same", "full"]}, "padding must be"),
        ({"channels": [8, 8], "conv_dropout": [0.1, 1.5]}, "dropout must be"),
        ({"channels": [8, 8], "stride": [1, 2, 2]}, "stride has 3 entries"),
    ],
)
def test_convnet_bad_per_layer_options_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        create_model("convnet", **kwargs)


def test_bncnn_learns_the_tiny_data_set(tmp_path, tiny_data):
    # synthetic digits are easy: a few epochs take a BatchNorm net far above chance (10%)
    result = tiny_run(tmp_path, tiny_data, model="bncnn", epochs=4, lr=3e-3, threads=1)
    assert result.metrics["val_accuracy"] > 0.5
