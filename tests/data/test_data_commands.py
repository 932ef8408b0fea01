import json
import shutil
import socket
import subprocess
import sys
import types
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bvkit.cli import main
from bvkit.data import load_source
from bvkit.errors import BvkitError


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_describe_cifar100_lt_json_without_data(capsys, tmp_path):
    code, out, err = run(["data", "describe", "cifar100-lt", "--json", "--data-root", str(tmp_path)],
                         capsys)
    assert code == 0 and err == ""
    assert len(out.strip().splitlines()) == 1
    info = json.loads(out)
    assert info["total"] == 10847 and len(info["counts"]) == 100
    assert info["counts"][:3] == [500, 477, 455] and info["counts"][-1] == 5
    assert info["splits"] == {"many": 35, "medium": 35, "few": 30}
    assert info["class_names"][:2] == ["0", "1"]  # no files: indices stand in for names


def test_describe_text_reports_the_empty_split(capsys, cifar10_root):
    root, _, _ = cifar10_root
    code, out, _ = run(["data", "describe", "cifar10-lt", "--data-root", str(root)], capsys)
    assert code == 0
    assert "12406 training images" in out
    assert "many 8, medium 2, few 0" in out
    assert "empty splits: few" in out
    assert "airplane" in out  # names read from the meta file when it is there


def test_describe_options(capsys):
    code, out, _ = run(["data", "describe", "synthetic-lt", "--profile", "step", "--imbalance", "10",
                        "--many", "400", "--few", "100", "--json"], capsys)
    info = json.loads(out)
    assert code == 0
    assert info["counts"] == [500] * 5 + [50] * 5 and info["total"] == 2750
    assert info["splits"] == {"many": 5, "medium": 0, "few": 5}
    assert info["empty_splits"] == ["medium"]
    code, out, _ = run(["data", "describe", "fashion-mnist-lt", "--json"], capsys)
    info = json.loads(out)
    assert info["counts"][0] == 6000 and info["class_names"][0] == "T-shirt/top"


def test_describe_file_list(capsys, tmp_path):
    list_path = tmp_path / "iNaturalist18_train.txt"
    list_path.write_text("a/1.jpg 0\na/2.jpg 0\nb/1.jpg 2\n")
    code, out, _ = run(["data", "describe", "inat2018", "--list", str(list_path), "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info["counts"] == [2, 0, 1] and info["total"] == 3
    assert info["splits"] == {"many": 0, "medium": 0, "few": 3}


@pytest.mark.parametrize("argv, message", [
    (["data", "describe", "imagenet-21k"], "unknown dataset 'imagenet-21k'"),
    (["data", "describe", "cifar100-lt", "--imbalance", "0.5"], "imbalance factor must be"),
    (["data", "describe", "x", "--list", "/nonexistent/list.txt"], "missing file list"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, message):
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err


def test_malformed_list_line_exits_2(capsys, tmp_path):
    list_path = tmp_path / "list.txt"
    list_path.write_text("a.jpg 0\nb.jpg zero\n")
    code, _, err = run(["data", "describe", "mine", "--list", str(list_path)], capsys)
    assert code == 2 and "list.txt, line 2" in err and len(err.strip().splitlines()) == 1


def test_installed_entry_point():
    beside = Path(sys.executable).parent / "bvkit"
    exe = str(beside) if beside.exists() else shutil.which("bvkit")
    if exe is None:
        pytest.skip("bvkit entry point not installed")
    done = subprocess.run([exe, "data", "describe", "cifar10-lt", "--json"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total"] == 12406


# ---------------------------------------------------------------- bvkit data fetch (never the network)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def fake_torchvision(monkeypatch, **classes):
    """A stand-in ``torchvision.datasets`` holding ``classes`` (importing the real one costs seconds)."""
    fake = types.ModuleType("torchvision")
    fake.datasets = types.SimpleNamespace(**classes)
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake.datasets)


def test_fetch_downloads_with_torchvision_into_the_data_root(capsys, monkeypatch, cifar10_root,
                                                             tmp_path):
    release = cifar10_root[0] / "cifar-10-batches-py"
    root = tmp_path / "fresh" / "root"
    calls = []

    class CIFAR10:
        url = CIFAR10_URL

        def __init__(self, root, download, train):
            calls.append((root, download, train))
            shutil.copytree(release, Path(root) / "cifar-10-batches-py", dirs_exist_ok=True)

    fake_torchvision(monkeypatch, CIFAR10=CIFAR10)
    code, out, err = run(["data", "fetch", "cifar10", "--data-root", str(root)], capsys)
    assert code == 0, err
    assert calls == [(str(root), True, True)]
    assert str(root / "cifar-10-batches-py") in out.splitlines()[-1]
    assert len(load_source("cifar10", root=root, train=False)) == 30  # test batch fetched too


def test_fetch_falls_back_to_bvkit_data(capsys, monkeypatch, tmp_path):
    calls = []

    class CIFAR100:
        url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"

        def __init__(self, root, download, train):
            calls.append(root)

    fake_torchvision(monkeypatch, CIFAR100=CIFAR100)
    monkeypatch.setenv("BVKIT_DATA", str(tmp_path))
    code, _, err = run(["data", "fetch", "cifar100"], capsys)
    assert calls == [str(tmp_path)]
    # a download that "succeeds" without the files is still an error, on one line
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "the download left no" in err and "cifar-100-python" in err


@pytest.mark.parametrize("failure, detail", [
    (urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution")),
     "Temporary failure in name resolution"),
    (socket.timeout("timed out"), "timed out"),
    (ConnectionResetError(104, "Connection reset by peer"), "Connection reset by peer"),
])
def test_fetch_offline_is_one_line_naming_url_and_host(capsys, monkeypatch, tmp_path, failure,
                                                       detail):
    """The real torchvision download, with ``urlopen`` failing as it does offline."""
    opened = []

    def urlopen(request, *args, **kwargs):
        opened.append(getattr(request, "full_url", request))
        raise failure

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    code, out, err = run(["data", "fetch", "cifar10", "--data-root", str(tmp_path)], capsys)
    assert opened and opened[0] == CIFAR10_URL  # the request went to the stub, not the network
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bvkit: error: could not download CIFAR10 from " + CIFAR10_URL)
    assert detail in lines[0] and "cannot reach www.cs.toronto.edu" in lines[0]
    assert "Traceback" not in out + err


@pytest.mark.parametrize("failure, detail", [
    (OSError(28, "No space left on device"), "No space left on device"),
    (urllib.error.HTTPError(CIFAR10_URL, 503, "Service Unavailable", {}, None),
     "HTTP Error 503: Service Unavailable"),
])
def test_fetch_other_failures_are_not_blamed_on_the_network(capsys, monkeypatch, tmp_path,
                                                           failure, detail):
    class CIFAR10:
        url = CIFAR10_URL

        def __init__(self, root, download, train):
            raise failure

    fake_torchvision(monkeypatch, CIFAR10=CIFAR10)
    code, _, err = run(["data", "fetch", "cifar10", "--data-root", str(tmp_path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert detail in err and "cannot reach" not in err


def test_fetch_refuses_other_datasets(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "fetch", "imagenet-lt"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'imagenet-lt'" in capsys.readouterr().err


def test_missing_cifar_names_the_fetch_command(tmp_path):
    with pytest.raises(BvkitError) as info:
        load_source("cifar100", root=tmp_path)
    message = str(info.value)
    assert f"bvkit data fetch cifar100 --data-root {tmp_path}" in message
    assert "download=True" not in message and "\n" not in message
