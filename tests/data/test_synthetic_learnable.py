import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bvkit.data import Augment, DeviceLoader, make_long_tailed, normalize, to_device


@pytest.fixture
def one_thread():
    # a tiny net gains nothing from threads, and on a shared machine they thrash
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_cnn_class_accuracy(data, n_classes: int, first_stride: int, epochs: int) -> np.ndarray:
    """Per-class balanced test accuracy of a 3-conv CNN trained ``epochs`` (SGD, one-cycle) on
    ``data``'s long-tailed set."""
    x, y = to_device(data.train)
    loader = DeviceLoader(x, y, 64, augment=Augment(crop_padding=0, mean=data.mean, std=data.std))
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=first_stride, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, n_classes))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, total_steps=epochs * len(loader))
    for _ in range(epochs):
        for inputs, targets in loader:
            optimizer.zero_grad()
            F.cross_entropy(net(inputs), targets).backward()
            optimizer.step()
            schedule.step()
    net.eval()
    xt, yt = to_device(data.test)
    with torch.no_grad():
        predictions = net(normalize(xt, data.mean, data.std)).argmax(1).numpy()
    return np.array([(predictions[yt.numpy() == c] == c).mean() for c in range(n_classes)])


@pytest.mark.slow
def test_tiny_cnn_learns_synthetic_lt_but_not_perfectly(one_thread):
    """The embedded dataset must be learnable in seconds, imperfectly, with a harder tail
    (measured: 0.52 balanced accuracy, head classes 0.94-0.99, the 3 tail classes 0)."""
    data = make_long_tailed("synthetic-lt", imbalance=100, seed=0)
    per_class = tiny_cnn_class_accuracy(data, 10, first_stride=2, epochs=12)
    assert 0.35 < per_class.mean() < 0.95, per_class  # chance is 0.10
    assert per_class[:3].mean() > per_class[-3:].mean() + 0.3, per_class  # head beats tail


@pytest.mark.slow
def test_tiny_cnn_learns_mini_lt_above_chance_but_not_perfectly(one_thread):
    """mini-lt, the demo's miniature of CIFAR-100-LT: a tiny CNN trained on its long-tailed set
    beats chance (0.05) on the balanced test set, stays well short of perfect, and learns the
    head better than the tail."""
    data = make_long_tailed("mini-lt", imbalance=100, seed=0)
    per_class = tiny_cnn_class_accuracy(data, 20, first_stride=1, epochs=8)
    assert 0.2 < per_class.mean() < 0.9, per_class
    assert per_class[:7].mean() > per_class[-6:].mean() + 0.3, per_class  # many beats few
