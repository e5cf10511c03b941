"""The agent's own command line, parsed without argparse."""

from __future__ import annotations

import pytest

from devdep.guest.agent import BadArguments, main, parse_arguments


def test_the_guest_command_line_is_understood() -> None:
    options = parse_arguments(["--port=/dev/vport1p1", "--sysroot=/sysroot"])

    assert options is not None
    assert (options.port, options.fd, options.sysroot) == (
        "/dev/vport1p1",
        None,
        "/sysroot",
    )
    assert options.chroot and options.poweroff


def test_the_test_command_line_is_understood() -> None:
    options = parse_arguments(
        ["--fd=7", "--sysroot=relative", "--no-chroot", "--no-poweroff"]
    )

    assert options is not None
    assert options.fd == 7
    assert options.sysroot.endswith("/relative") and options.sysroot.startswith("/")
    assert not options.chroot and not options.poweroff


@pytest.mark.parametrize(
    "arguments",
    [[], ["--port=/a", "--fd=3"], ["--fd=x"], ["--port="], ["--port=/a", "--verbose"]],
)
def test_bad_command_lines_are_refused(arguments: list[str]) -> None:
    with pytest.raises(BadArguments):
        parse_arguments(arguments)


def test_help_prints_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: python3 -m devdep.guest.agent")


def test_a_bad_command_line_exits_2_with_one_error_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--bogus"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: unknown or incomplete argument '--bogus'"
    )


def test_a_missing_port_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port=/nonexistent/vport9p9", "--no-poweroff"]) == 1
    assert "cannot open the port /nonexistent/vport9p9" in capsys.readouterr().err
