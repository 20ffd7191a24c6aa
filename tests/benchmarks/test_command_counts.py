"""Every command refuses a zero or negative count in its argument parser, naming the flag.

Lives on the top floor because it imports every command. Each command's parser is caught
as its ``main`` builds it; every option typed with ``store.cli``'s ``positive_int`` /
``positive_float`` is given ``0`` and ``-3``, every ``non_negative_int`` one ``-1``: each
must end in ``SystemExit(2)`` with the flag's name on stderr, before any work starts.
"""

import argparse
import importlib
import re

import pytest

from store.cli import non_negative_int, positive_float, positive_int

COMMANDS = [
    "store.info", "store.search", "store.split", "store.export", "store.import", "store.merge",
    "heads.train", "heads.sweep", "heads.knn", "heads.localize",
    "extract.run", "extract.train", "extract.search", "extract.demo", "fusion.run",
    "benchmarks.run", "benchmarks.pipeline", "benchmarks.recipes",
]
#: Integer options that are not counts: -1 means "all" (fusion.run --other-scores).
NOT_COUNTS = {("fusion.run", "--other-scores")}
#: Flags the issue named, which must be among the checked ones.
MUST = {
    "extract.run": {"--clips", "--batch-size", "--workers", "--frames", "--crop", "--limit", "--seed"},
    "extract.train": {"--epochs", "--batch-size", "--train-segments", "--eval-clips", "--workers"},
    "heads.train": {"--epochs", "--batch-size", "--folds", "--patience"},
    "heads.knn": {"-k", "--folds", "--top"},
    "heads.sweep": {"--workers", "--retries"},
    "heads.localize": {"--top"},
    "store.import": {"--max-clips", "--chunk-rows"},
    "store.search": {"-k", "--top-labels"},
    "extract.search": {"-k", "--top-labels"},
    "extract.demo": {"--videos", "--size"},
    "benchmarks.pipeline": {"--videos", "--folds", "--knn-k"},
}


class _Caught(Exception):
    pass


def _command_module(command: str):
    """What ``python -m command`` runs: the module, or a package's ``__main__``."""
    module = importlib.import_module(command)
    return importlib.import_module(f"{command}.__main__") if hasattr(module, "__path__") else module


def _parser(command: str) -> argparse.ArgumentParser:
    """The parser ``main`` builds, caught at its first parse."""
    caught = []

    def catch(self, args=None, namespace=None):
        caught.append(self)
        raise _Caught

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(argparse.ArgumentParser, "parse_known_args", catch)
        with pytest.raises(_Caught):
            _command_module(command).main(["--help"])
    return caught[0]


def _cases():
    for command in COMMANDS:
        for action in _parser(command)._actions:
            flag = max(action.option_strings, key=len, default=None)
            if action.type in (positive_int, positive_float):
                yield from ((command, flag, bad) for bad in ("0", "-3"))
            elif action.type is non_negative_int:
                yield command, flag, "-1"


CASES = list(_cases())


def test_every_integer_option_is_a_checked_count():
    for command in COMMANDS:
        for action in _parser(command)._actions:
            flags = set(action.option_strings)
            if action.type is int and not {(command, f) for f in flags} & NOT_COUNTS:
                raise AssertionError(f"{command} {action.option_strings}: type=int, use store.cli's types")
    checked = {(c, f) for c, f, _ in CASES}
    for command, flags in MUST.items():
        for flag in flags:
            names = {f for a in _parser(command)._actions for f in a.option_strings if flag in a.option_strings}
            assert {(command, max(names, key=len))} <= checked, (command, flag)


@pytest.mark.parametrize("command, flag, bad", CASES, ids=[f"{c}{f}={b}" for c, f, b in CASES])
def test_a_zero_or_negative_count_is_refused_with_the_flag_name(command, flag, bad, capsys):
    with pytest.raises(SystemExit) as exit_:
        _command_module(command).main([flag, bad])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert re.search(rf"error: argument (\S+/)?{re.escape(flag)}: ", last), last
    assert last.endswith((f"must be at least 1, got {bad}", f"must be 0 or more, got {bad}",
                          f"must be greater than 0, got {bad}")), last
