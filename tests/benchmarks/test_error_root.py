"""One error root: every error class of every package derives from store.errors.VideoFeatError, and
every ``python -m ...`` command turns that root into one ``error: ...`` line and exit status 2."""

import argparse
import importlib
import inspect
import pkgutil

import pytest

from store.errors import StoreError, VideoFeatError

PACKAGES = ("store", "heads", "extract", "fusion", "benchmarks")


def _modules():
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        yield pkg
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
            yield importlib.import_module(info.name)


MODULES = list(_modules())
COMMANDS = [m for m in MODULES if "if __name__ == \"__main__\":" in inspect.getsource(m)]


def test_every_error_class_derives_from_the_root():
    errors = {}
    for module in MODULES:
        for name, cls in vars(module).items():
            if inspect.isclass(cls) and issubclass(cls, Exception) and cls.__module__ == module.__name__:
                errors[f"{module.__name__}.{name}"] = cls
    outside = sorted(name for name, cls in errors.items() if not issubclass(cls, VideoFeatError))
    assert outside == []
    # the families the commands used to list one by one are all there
    names = {cls.__name__ for cls in errors.values()}
    assert {"StoreError", "SettingsError", "TrainError", "GridError", "KnnError", "DeviceUnavailable", "ExtractError",
            "InputError", "DecodeError", "WeightsError", "FusionError", "RecipeError", "PipelineError"} <= names
    assert not issubclass(errors["fusion.errors.FusionError"], StoreError)


def test_every_command_is_found():
    assert {m.__name__ for m in COMMANDS} == {
        "store.info", "store.verify", "store.search", "store.export", "store.import", "store.split", "store.merge",
        "heads.train", "heads.sweep", "heads.knn", "heads.localize",
        "extract.run", "extract.train", "extract.search", "extract.demo.__main__", "fusion.run", "benchmarks.run",
        "benchmarks.recipes.__main__", "benchmarks.pipeline.__main__", "benchmarks.scale_bench"}


@pytest.mark.parametrize("module", COMMANDS, ids=lambda m: m.__name__)
def test_each_command_turns_the_root_into_one_line_and_exit_2(module, monkeypatch, capsys):
    class Refused(VideoFeatError):
        pass

    def refuse(self, *args, **kwargs):  # every command parses its arguments first
        raise Refused("the flag is wrong;\n  fix it")

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", refuse)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", refuse)
    assert module.main([]) == 2
    out, err = capsys.readouterr()
    assert err == "error: the flag is wrong; fix it\n" and out == ""
