"""The exit-code table: one exception type per code, and docs that agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devdep import errors
from devdep.errors import ExitCode, exit_code_for

DOCS = Path(__file__).resolve().parents[1] / "docs" / "exit-codes.md"

EXPECTED = {
    errors.JobFailed: 1,
    errors.UsageError: 2,
    errors.OidcTimeout: 101,
    errors.DomainRestricted: 102,
    errors.VaultMismatch: 201,
    errors.VmBootFailed: 301,
    errors.EgressViolation: 401,
}


@pytest.mark.parametrize(("error_type", "code"), EXPECTED.items())
def test_each_error_type_maps_to_its_code(
    error_type: type[Exception], code: int
) -> None:
    assert exit_code_for(error_type("x")) == code


def test_a_subclass_inherits_its_code() -> None:
    class ImageMissing(errors.UsageError):
        pass

    assert exit_code_for(ImageMissing("x")) == ExitCode.ERR_USAGE


def test_anything_else_is_an_internal_error() -> None:
    assert exit_code_for(ValueError("x")) == ExitCode.INTERNAL_ERROR
    assert exit_code_for(errors.DevdepError("x")) == ExitCode.INTERNAL_ERROR


def test_the_docs_table_matches_the_code() -> None:
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", DOCS.read_text(), re.MULTILINE)
    assert {(int(code), name) for code, name in rows} == {
        (int(code), code.name) for code in ExitCode
    }
