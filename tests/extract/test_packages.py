"""Each sub-package's ``__all__`` names what it really exports (lazy exports resolve)."""

import importlib

import pytest

PACKAGES = ["extract", "extract.media", "extract.dump", "extract.demo", "extract.backbones", "extract.training"]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_resolves(name):
    package = importlib.import_module(name)
    assert package.__all__, name
    for public in package.__all__:
        assert getattr(package, public) is not None, f"{name}.{public}"


def test_an_unknown_name_is_an_attribute_error():
    media = importlib.import_module("extract.media")
    with pytest.raises(AttributeError, match="no attribute 'decode_videos'"):
        media.decode_videos  # noqa: B018
