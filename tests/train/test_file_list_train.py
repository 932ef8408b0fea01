"""``train()`` on file-list benchmarks (ImageNet-LT / iNat 2018 layout) with a tiny fake tree:
real JPEG files in the published list format, a ResNet-10 at 32 px, CPU."""

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from interrupts import interrupt_after_checkpoint
from PIL import Image

from bvkit.cli import main
from bvkit.data import load_benchmark
from bvkit.methods import create_method
from bvkit.train import train
from bvkit.train.data import prepare_data

TRAIN_COUNTS = [12, 8, 5, 3]
# ResNet-10 at 32 px, batch 8, no DataLoader worker processes (the CPUs are shared)
TINY = {"epochs": 1, "model": "resnet10", "batch_size": 8, "augment.size": 32, "augment.resize": 36, "workers": 0}


def _write_list(root, folder, part, counts, list_name):
    """JPEGs under root/folder/part/nXX/ and their 'path label' list root/folder/list_name."""
    rng = np.random.default_rng(len(list_name) + sum(counts))
    lines = []
    for label, n in enumerate(counts):
        images = root / folder / part / f"n{label:02d}"
        images.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (36 + i % 3, 40, 3), dtype=np.uint8)
            pixels[..., label % 3] //= 4  # a little class signal
            Image.fromarray(pixels).save(images / f"{part}_{i}.JPEG", quality=90)
            lines.append(f"{part}/n{label:02d}/{part}_{i}.JPEG {label}")
    (root / folder / list_name).write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """ImageNet_LT/ImageNet_LT_{train,val,test}.txt (val 2, test 3 per class) and
    iNaturalist18/iNaturalist18_{train,val}.txt under one data root."""
    root = tmp_path_factory.mktemp("lists")
    _write_list(root, "ImageNet_LT", "train", TRAIN_COUNTS, "ImageNet_LT_train.txt")
    _write_list(root, "ImageNet_LT", "val", [2] * 4, "ImageNet_LT_val.txt")
    _write_list(root, "ImageNet_LT", "test", [3] * 4, "ImageNet_LT_test.txt")
    _write_list(root, "iNaturalist18", "train_val2018", [20, 11, 6, 4], "iNaturalist18_train.txt")
    _write_list(root, "iNaturalist18", "val2018", [2] * 4, "iNaturalist18_val.txt")
    return root


def test_imagenet_lt_validation_is_the_val_list_and_test_the_test_list(data_root):
    recipe = create_method("ce", dataset="imagenet-lt", **{"augment.size": 32})
    data = prepare_data(load_benchmark("imagenet-lt", data_root), recipe, 0, torch.device("cpu"), workers=0)
    assert all(path.startswith("val/") for path in data.val.paths) and len(data.val) == 8
    assert all(path.startswith("test/") for path in data.test.paths) and len(data.test) == 12
    assert len(data.train) == sum(TRAIN_COUNTS) and list(data.counts) == TRAIN_COUNTS


def test_inat_holds_validation_out_of_the_training_list(data_root):
    recipe = create_method("ce", dataset="inat2018")
    assert recipe.val_per_class == 3
    data = prepare_data(load_benchmark("inat2018", data_root), recipe, 0, torch.device("cpu"), workers=0)
    # up to 3 per class, at most a fifth of the class: 20 -> 3, 11 -> 2, 6 -> 1, 4 -> 0
    assert list(np.bincount(data.val.labels, minlength=4)) == [3, 2, 1, 0]
    assert not set(data.val.paths) & set(data.train.paths)
    assert set(data.val.paths) | set(data.train.paths) == set(load_benchmark("inat2018", data_root).train.paths)
    assert all(path.startswith("val2018/") for path in data.test.paths)  # the official val list is the test set
    assert list(data.counts) == [20, 11, 6, 4]  # shot splits from the whole training list


def test_published_settings_apply_unless_overridden():
    ride = create_method("ride", dataset="imagenet-lt")
    assert (ride.model, ride.epochs, ride.batch_size, ride.lr, ride.weight_decay) == ("ride-resnet50", 100, 256, 0.1, 2e-4)
    assert ride.lr_milestones == (60, 80) and ride.lr_factors == (0.1, 0.01) and ride.drw_epoch == 80
    assert ride.loss_kwargs == {"diversity_weight": -0.2, "gamma": 0.02}
    inat = create_method("ride-ea", dataset="inat2018", lr=0.05)
    assert (inat.batch_size, inat.lr, inat.loss_kwargs["gamma"]) == (512, 0.05, 0.015)
    assert inat.stages[0].options["top_k"] == 50
    assert create_method("ldam", dataset="imagenet-lt").drw_epoch is None
    assert create_method("ce", dataset="cifar100-lt") == create_method("ce")


def test_data_describe_reads_the_training_list(data_root, capsys):
    assert main(["data", "describe", "imagenet-lt", "--data-root", str(data_root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["counts"] == TRAIN_COUNTS and info["splits"] == {"many": 0, "medium": 0, "few": 4}


def test_train_writes_the_cifar_path_outputs(data_root, tmp_path, capsys):
    runs = [train("ce", "imagenet-lt", data_root=data_root, out=tmp_path / f"s{seed}", device="cpu", seed=seed,
                  **TINY) for seed in (0, 1)]
    metrics = json.loads((tmp_path / "s0" / "metrics.json").read_text())
    assert metrics["dataset"] == "imagenet-lt" and metrics["n_test"] == 12 and metrics["n_val"] == 8
    assert metrics["n_train"] == sum(TRAIN_COUNTS) and metrics["imbalance"] == 4.0
    assert set(metrics["accuracy"]) == {"all", "many", "medium", "few"}
    assert metrics["split_sizes"] == {"many": 0, "medium": 0, "few": 4}
    assert metrics["val_accuracy"] is not None and metrics["mflops"] > 0
    assert (tmp_path / "s0" / "history.csv").is_file() and (tmp_path / "s0" / "checkpoint.pt").is_file()
    with np.load(tmp_path / "s0" / "predictions.npz") as npz:
        assert npz["logits"].shape == (1, 12, 4) and list(npz["train_counts"]) == TRAIN_COUNTS
        np.testing.assert_array_equal(npz["labels"], np.repeat(np.arange(4), 3))  # test list order
        keys = {key: npz[key] for key in npz.files}
    # bvkit decompose reads the same format: two runs' logits make a 2-model set
    stacked = tmp_path / "two.npz"
    np.savez(stacked, **{**keys, "logits": np.concatenate([run.logits[None] for run in runs])})
    assert main(["decompose", str(stacked), "--out", str(tmp_path / "dec")]) == 0
    assert (tmp_path / "dec" / "per_split.csv").is_file()
    capsys.readouterr()

    # a finished run is not retrained: the rerun only re-evaluates
    again = train("ce", "imagenet-lt", data_root=data_root, out=tmp_path / "s0", device="cpu", seed=0, **TINY)
    assert len(again.history) == 1
    np.testing.assert_allclose(again.logits, runs[0].logits, rtol=1e-5, atol=1e-5)


def test_resume_gives_the_same_result_as_an_uninterrupted_run(data_root, tmp_path, monkeypatch):
    settings = {**TINY, "epochs": 2, "balanced": True}
    straight = train("ce", "imagenet-lt", data_root=data_root, out=tmp_path / "straight", device="cpu", seed=3,
                     **settings)
    interrupt_after_checkpoint(monkeypatch, lambda: train("ce", "imagenet-lt", data_root=data_root,
                                                          out=tmp_path / "resumed", device="cpu", seed=3, **settings))
    resumed = train("ce", "imagenet-lt", data_root=data_root, out=tmp_path / "resumed", device="cpu", seed=3,
                    **settings)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    np.testing.assert_array_equal(straight.logits, resumed.logits)
    assert [row["loss"] for row in straight.history] == [row["loss"] for row in resumed.history]


def test_second_stage_runs_on_file_lists(data_root, tmp_path):
    result = train("tau-norm", "imagenet-lt", data_root=data_root, device="cpu", **TINY)
    assert 0.0 <= result.metrics["tau"] <= 1.0 and result.logits.shape == (12, 4)
    crt = train("crt", "imagenet-lt", data_root=data_root, device="cpu", **{**TINY, "crt.epochs": 1, "crt.batch_size": 8})
    assert [row["stage"] for row in crt.history] == ["stage1", "crt"]
    routed = train("ride-ea", "imagenet-lt", data_root=data_root, device="cpu",
                   **{**TINY, "model": "ride-resnet10", "model_kwargs.num_experts": 2, "routing.epochs": 1,
                      "routing.batch_size": 8})
    assert routed.recipe.loss_kwargs["gamma"] == 0.02 and len(routed.metrics["expert_usage"]["all"]) == 2


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "imagenet-lt"], "imagenet-lt not found: no ImageNet_LT_train.txt"),
    (["--dataset", "inat2018", "--method", "bbn"], "needs data held on the device"),
    (["--dataset", "imagenet-21k"], "unknown dataset 'imagenet-21k'"),
])
def test_cli_bad_input_is_one_line_and_exit_code_2(argv, message, data_root, tmp_path, capsys):
    root = tmp_path if argv[1] == "imagenet-lt" else data_root  # tmp_path has no lists
    argv = argv + ([] if "--method" in argv else ["--method", "ce"])
    code = main(["train", *argv, "--data-root", str(root), "--device", "cpu", "--workers", "0",
                 "--set", "model=resnet10", "--set", "augment.size=32", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_missing_image_is_one_line(data_root, tmp_path, capsys):
    broken = tmp_path / "ImageNet_LT"
    broken.mkdir()
    for name in ("train", "val", "test"):
        text = (data_root / "ImageNet_LT" / f"ImageNet_LT_{name}.txt").read_text()
        (broken / f"ImageNet_LT_{name}.txt").write_text(text)  # lists without images
    code = main(["train", "--dataset", "imagenet-lt", "--method", "ce", "--data-root", str(tmp_path), "--device", "cpu",
                 "--workers", "1", "--set", "model=resnet10", "--set", "augment.size=32", "--epochs", "1",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot read image" in err and len(err.strip().splitlines()) == 1, err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    from bvkit.train import ddp

    def sliced_again(*args):
        raise AssertionError("a sharded file-list loader must not be sliced again")

    ddp.shard = sliced_again  # each rank's loader already yields its own slice
    try:
        result = train("ce", "imagenet-lt", data_root=root, out=out if rank == 0 else f"{out}-rank{rank}",
                       device="cpu", seed=5, **TINY)
        torch.save({"logits": result.logits, "history": result.history, "n_test": result.metrics["n_test"]},
                   f"{out}-result{rank}.pt")
    finally:
        ddp.shutdown()


@pytest.mark.slow
def test_two_process_ddp_on_a_file_list(data_root, tmp_path):
    out = tmp_path / "ddp"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(data_root), str(out)), nprocs=2, join=True)
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "predictions.npz", "history.csv", "checkpoint.pt"}
    assert not any((tmp_path / "ddp-rank1").iterdir())  # only rank 0 writes outputs
    results = [torch.load(f"{out}-result{rank}.pt", weights_only=False) for rank in (0, 1)]
    assert results[0]["n_test"] == results[1]["n_test"] == 12
    np.testing.assert_array_equal(results[0]["logits"], results[1]["logits"])  # gathered on every rank
    assert len(results[0]["history"]) == 1 and np.isfinite(results[0]["history"][0]["loss"])


def test_ranks_split_every_global_batch_between_them():
    from bvkit.data import EpochBatchSampler

    labels = np.repeat(np.arange(4), [12, 8, 5, 3])
    single = list(EpochBatchSampler(labels, 8, seed=2))
    ranks = [list(EpochBatchSampler(labels, 8, seed=2, rank=r, world_size=2)) for r in (0, 1)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 4
    for whole, first, second in zip(single, *ranks):
        assert first + second == whole and abs(len(first) - len(second)) <= 1
    assert sorted(i for batch in single for _, i in batch) == list(range(28))  # each image once
    again = EpochBatchSampler(labels, 8, seed=2)
    again.set_epoch(1)
    second_epoch = list(again)
    assert second_epoch != single and all(epoch == 1 for batch in second_epoch for _, epoch in
                                         [(i, e) for e, i in batch])
