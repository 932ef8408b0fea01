"""docs/commands/ is the current argparse help of every command (docs/make_command_docs.py).

When this fails after a command's options changed, regenerate: ``python docs/make_command_docs.py``.
"""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "make_command_docs.py"
COMMANDS = ["demo", "data describe", "data fetch", "flops", "methods", "train", "study run",
            "study status", "decompose", "figures", "table", "report"]


@pytest.fixture(scope="module")
def docs():
    spec = importlib.util.spec_from_file_location("make_command_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pages(docs):
    return docs.render_pages()


def test_every_command_has_a_page(docs, pages):
    from bvkit.cli import build_parser

    commands = {" ".join(words) for words, _, _ in docs.leaf_commands(build_parser())}
    assert set(COMMANDS) <= commands
    for command in COMMANDS:
        name = docs.page_name(tuple(command.split()))
        assert pages[name].startswith(f"# bvkit {command}\n"), name
        assert f"usage: bvkit {command} " in pages[name]
        assert f"]({name})" in pages[docs.INDEX]


def test_pages_are_the_current_help(docs, pages):
    written = (docs.COMMANDS_DIR / docs.INDEX).read_text(encoding="utf-8")
    python = re.search(r"as Python (\d+)\.(\d+) prints it", written)
    assert python, f"{docs.COMMANDS_DIR / docs.INDEX} does not say which Python wrote it"
    stale = docs.stale_pages(pages)
    if tuple(map(int, python.groups())) == sys.version_info[:2]:
        assert not stale, f"run `python docs/make_command_docs.py`: {', '.join(stale)} differ"
        return
    # another Python lays the help out a little differently: every page is there and names
    # every option its command has now
    from bvkit.cli import build_parser

    assert set(pages) == {p.name for p in docs.COMMANDS_DIR.glob("*.md")}
    for words, parser, _ in docs.leaf_commands(build_parser()):
        text = (docs.COMMANDS_DIR / docs.page_name(words)).read_text(encoding="utf-8")
        for action in parser._actions:
            for flag in action.option_strings:
                assert flag in text, f"{flag} of bvkit {' '.join(words)} is not in its page"


def test_a_changed_or_stray_page_is_found_and_rewritten(docs, pages, tmp_path):
    assert docs.write_pages(pages, tmp_path) == sorted(pages)
    assert docs.stale_pages(pages, tmp_path) == []
    edited = tmp_path / "decompose.md"
    edited.write_text(edited.read_text().replace("--bootstrap-models", "--resample-models"))
    (tmp_path / "gone.md").write_text("# bvkit gone\n")
    assert docs.stale_pages(pages, tmp_path) == ["decompose.md", "gone.md"]
    docs.write_pages(pages, tmp_path)
    assert not (tmp_path / "gone.md").exists() and "--bootstrap-models" in edited.read_text()


def test_pages_do_not_depend_on_the_terminal(docs, pages, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    assert docs.render_pages() == pages
