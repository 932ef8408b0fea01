"""Fixtures: an in-process ``bvkit`` CLI."""

import pytest


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Run ``bvkit ...`` in-process with only the decompose command registered."""
    from bvkit import cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", ("bvkit.decomposition.commands",))

    def run(*argv):
        code = cli.main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
