"""Packed networks: each model's slice computes what the model computes alone."""

import pytest
import torch

from bvkit.errors import BvkitError
from bvkit.models import create_model
from bvkit.models.packed_models import pack_inputs, pack_models, unpack_state

CASES = [
    ("resnet32", {"width": 4, "blocks": 1}),
    ("resnet32-ldam", {"width": 4, "blocks": 2}),
    ("ride-resnet32", {"width": 4, "blocks": 1, "num_experts": 3}),
    ("ride-resnet32", {"width": 4, "blocks": 2, "num_experts": 2, "reduce_dimension": False}),
]


def _single_output(model, x):
    return model.forward_experts(x) if hasattr(model, "forward_experts") else model(x)


def _assert_close(got, want):
    if isinstance(want, dict):
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5)
    else:
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,kwargs", CASES)
def test_packed_forward_and_unpacked_state_match_the_single_models(name, kwargs):
    torch.manual_seed(0)
    models = [create_model(name, 5, **kwargs) for _ in range(3)]
    packed = pack_models(models)
    xs = [torch.randn(4, 3, 32, 32) for _ in range(3)]
    for train_mode in (True, False):  # batch statistics, then running statistics
        packed.train(train_mode)
        out = packed(pack_inputs(xs))
        for k, model in enumerate(models):
            model.train(train_mode)
            _assert_close(packed.model_output(out, k), _single_output(model, xs[k]))
    for k, model in enumerate(models):  # running statistics updated per model, like the models'
        state, reference = unpack_state(packed, k), model.state_dict()
        assert set(state) == set(reference)
        for key in reference:
            torch.testing.assert_close(state[key], reference[key], rtol=1e-4, atol=1e-5)


def test_gradients_stay_within_their_model_and_sgd_is_per_model():
    torch.manual_seed(1)
    models = [create_model("resnet32", 5, width=4, blocks=1) for _ in range(3)]
    packed = pack_models(models)
    xs = [torch.randn(6, 3, 32, 32) for _ in range(3)]
    ys = [torch.randint(0, 5, (6,)) for _ in range(3)]
    sgd = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    singles = [torch.optim.SGD(m.parameters(), **sgd) for m in models]
    optimizer = torch.optim.SGD(packed.parameters(), **sgd)
    for _ in range(3):
        out = packed(pack_inputs(xs))
        loss = sum(torch.nn.functional.cross_entropy(out[k], ys[k]) for k in range(3))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for model, opt, x, y in zip(models, singles, xs, ys):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for k, model in enumerate(models):
        state = unpack_state(packed, k)
        for key, value in model.state_dict().items():
            torch.testing.assert_close(state[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_a_models_loss_moves_only_its_own_slice():
    models = [create_model("resnet32", 5, width=4, blocks=1) for _ in range(2)]
    packed = pack_models(models)
    out = packed(pack_inputs([torch.randn(3, 3, 32, 32) for _ in range(2)]))
    out[1].sum().backward()
    assert unpack_state(packed, 0) is not None
    grad = packed.stem[0].weight.grad
    assert grad[:4].abs().sum() == 0 and grad[4:].abs().sum() > 0


def test_unpackable_models_are_refused():
    with pytest.raises(BvkitError, match="cannot pack"):
        pack_models([create_model("resnet10", 5)])
    with pytest.raises(BvkitError, match="one architecture"):
        pack_models([create_model("resnet32", 5, width=4, blocks=1), create_model("resnet32", 5, width=8, blocks=1)])
