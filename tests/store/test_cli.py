"""store.cli.run_command: the project's errors end as one line and exit 2; Ctrl-C as a hint and 130."""

import pytest

from store.cli import run_command
from store.errors import FeatureSetNotFound, SettingsError, VideoFeatError


def test_root_errors_become_one_line_and_exit_2(capsys):
    @run_command
    def main(argv=None):
        raise FeatureSetNotFound("no feature set 'x'\n  extract it first")

    assert main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "error: no feature set 'x' extract it first\n"
    assert main.__wrapped__.__name__ == "main"

    @run_command
    def settings(argv=None):
        raise SettingsError("lr must be > 0")

    assert settings() == 2 and capsys.readouterr().err == "error: lr must be > 0\n"
    assert issubclass(SettingsError, ValueError) and issubclass(SettingsError, VideoFeatError)


def test_other_errors_pass_through_and_success_keeps_its_status(capsys):
    @run_command
    def broken(argv=None):
        raise RuntimeError("a bug, not a user error")

    with pytest.raises(RuntimeError, match="a bug"):
        broken()

    @run_command
    def found_problems(argv=None):
        return 1

    assert found_problems() == 1 and capsys.readouterr().err == ""


def test_path_errors_are_user_errors_only_where_asked(capsys):
    def unwritable(argv=None):
        raise PermissionError(13, "Permission denied", "/out/x.h5")

    assert run_command(path_errors=True)(unwritable)() == 2
    assert capsys.readouterr().err == "error: [Errno 13] Permission denied: '/out/x.h5'\n"
    with pytest.raises(PermissionError):
        run_command(unwritable)()


def test_interrupt_prints_how_to_continue(capsys):
    def stop(argv=None):
        raise KeyboardInterrupt

    assert run_command(interrupted="rerun to resume")(stop)() == 130
    assert capsys.readouterr().err == "interrupted: rerun to resume\n"
    with pytest.raises(KeyboardInterrupt):
        run_command(stop)()
