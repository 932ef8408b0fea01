import pytest
import torch
from train_helpers import TINY

# The test machine's 2 cores are shared: one intra-op thread avoids oversubscription stalls
# (measured: a tiny training step takes ~0.06 s with 1 thread, 0.3-0.9 s with 2 under load).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_data():
    """synthetic-lt, 10 classes, 60 .. 6 training images per class (~250 in all)."""
    from bvkit.data import make_long_tailed

    return make_long_tailed("synthetic-lt", imbalance=10, n_max=60)


@pytest.fixture(scope="session")
def stage_one_dir(tmp_path_factory, tiny_data):
    """A finished 2-epoch CE run: the stage one shared by the decoupled-stage tests."""
    from bvkit.train import train

    out = tmp_path_factory.mktemp("ce")
    train("ce", tiny_data, out=out, device="cpu", epochs=2, **TINY)
    return out


@pytest.fixture(scope="session")
def ride_stage_one_dir(tmp_path_factory, tiny_data):
    from bvkit.train import train

    out = tmp_path_factory.mktemp("ride")
    train("ride", tiny_data, out=out, device="cpu", epochs=2, **TINY)
    return out
