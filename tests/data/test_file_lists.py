import numpy as np
import pytest
import torch
from PIL import Image

from bvkit.data import (
    FileListDataset,
    file_list_loader,
    imagenet_transform,
    load_file_list,
)
from bvkit.errors import BvkitError


@pytest.fixture
def png_tree(tmp_path):
    """An ImageNet-LT style tree: train/<class>/<image>.png and a 'path label' list."""
    rng = np.random.default_rng(0)
    lines = []
    for label, per_class in enumerate([6, 3, 1]):
        folder = tmp_path / "train" / f"n0{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"img {i}.png")  # a space in the name
            lines.append(f"train/n0{label}/img {i}.png {label}")
    list_path = tmp_path / "ImageNet_LT_train.txt"
    list_path.write_text("\n".join(lines) + "\n\n")
    return tmp_path, list_path


def test_load_file_list(png_tree):
    root, list_path = png_tree
    files = load_file_list(list_path, root)
    assert len(files) == 10 and files.labels.dtype == np.int64
    assert files.paths[0] == "train/n00/img 0.png"
    assert list(files.class_counts()) == [6, 3, 1]
    assert files.class_names == ["0", "1", "2"]
    image = files.read(7)
    assert image.mode == "RGB" and image.size == (40, 31)
    assert load_file_list(list_path).image_root == root  # defaults to the list's folder


@pytest.mark.parametrize("line", ["train/a.png", "train/a.png cat", "train/a.png -1", "7"])
def test_malformed_line_names_file_and_line(tmp_path, line):
    list_path = tmp_path / "list.txt"
    list_path.write_text(f"train/ok.png 0\n{line}\n")
    with pytest.raises(BvkitError, match=r"list.txt, line 2: expected 'relative/path label'"):
        load_file_list(list_path, tmp_path)


def test_file_list_bad_input(tmp_path, png_tree):
    with pytest.raises(BvkitError, match="missing file list"):
        load_file_list(tmp_path / "none.txt", tmp_path)
    _, list_path = png_tree
    with pytest.raises(BvkitError, match="image root .* is not a directory"):
        load_file_list(list_path, tmp_path / "nowhere")
    with pytest.raises(BvkitError, match="only 2 class names"):
        load_file_list(list_path, class_names=["a", "b"])
    missing = load_file_list(list_path, tmp_path / "train")  # wrong root: files not there
    with pytest.raises(BvkitError, match="cannot read image"):
        missing.read(0)


def test_dataset_and_worker_loader(png_tree):
    root, list_path = png_tree
    files = load_file_list(list_path, root)
    dataset = FileListDataset(files, imagenet_transform(train=False))
    image, label = dataset[9]
    assert image.shape == (3, 224, 224) and image.dtype == torch.float32 and label == 2
    # the list's 10th file, read and transformed directly
    assert torch.equal(image, imagenet_transform(train=False)(Image.open(root / "train/n02/img 0.png").convert("RGB")))

    def batches(seed, workers=2):
        loader = file_list_loader(files, batch_size=4, train=True, workers=workers, seed=seed)
        return [(x.clone(), y.clone()) for x, y in loader]

    first = batches(seed=0)
    assert len(first) == 2  # 10 images, batch 4, last partial batch dropped for training
    x, y = first[0]
    assert x.shape == (4, 3, 224, 224) and y.dtype == torch.int64
    for again in (batches(seed=0), batches(seed=0, workers=0)):  # seeded per sample: any number of workers
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not torch.equal(first[0][0], batches(seed=1)[0][0])
    test_loader = file_list_loader(files, batch_size=4, train=False, workers=0)
    assert torch.cat([y for _, y in test_loader]).tolist() == files.labels.tolist()
    test_images = torch.cat([x for x, _ in test_loader])
    assert all(torch.equal(test_images[i], dataset[i][0]) for i in range(len(files)))  # in list order


def test_balanced_file_list_loader(png_tree):
    root, list_path = png_tree
    files = load_file_list(list_path, root)
    loader = file_list_loader(files, batch_size=5, train=True, workers=0, balanced=True,
                              transform=imagenet_transform(True, size=32), seed=1)
    loader.set_epoch(0)
    labels = torch.cat([y for _, y in loader])
    assert len(labels) == 10 and labels.max() <= 2
    loader.set_epoch(0)  # the images loaded are those the sampler drew
    keys = [key for batch in loader.sampler for key in batch]
    assert labels.tolist() == [int(files.labels[i]) for _, i in keys]

    # 6, 3 and 1 images: over 300 epochs' draws (the sampler alone, no image decoded) each class
    # near 1/3 where the list has 0.6, 0.3, 0.1
    drawn = []
    for epoch in range(300):
        loader.set_epoch(epoch)
        drawn += [i for batch in loader.sampler for _, i in batch]
    freq = np.bincount(files.labels[drawn], minlength=3) / len(drawn)
    np.testing.assert_allclose(freq, 1 / 3, atol=0.03)
    images = np.bincount(drawn, minlength=10)
    assert images[files.labels == 0].min() > 0.5 * images[files.labels == 0].mean()  # within a class, alike
    plain = file_list_loader(files, batch_size=5, train=True, workers=0, transform=imagenet_transform(True, size=32))
    assert sorted(torch.cat([y for _, y in plain]).tolist()) == sorted(files.labels.tolist())  # one of each
