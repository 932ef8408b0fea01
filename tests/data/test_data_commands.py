import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bvkit.cli import main


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
