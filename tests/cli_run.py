"""Running the deploylm CLI in this process, the same entry point as the console script (saves a torch import per
case): shared by the CLI tests."""

import sys
from types import SimpleNamespace

import pytest


def run_inprocess(capsys, monkeypatch, *args):
    from deploylm import cli

    monkeypatch.setattr(sys, "argv", ["deploylm", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    cap = capsys.readouterr()
    return SimpleNamespace(returncode=exc.value.code, stdout=cap.out, stderr=cap.err)
