from __future__ import annotations

import pytest

from devdep.images import debian
from devdep.images.debian import PackageVersion, candidates
from devdep.images.errors import ImageBuildFailed

APT_CACHE_SHOW = """\
Package: linux-image-amd64
Source: linux-signed-amd64 (6.1.192+3)
Version: 6.1.192-3
Depends: linux-image-6.1.0-57-amd64 (= 6.1.192-3)
Description: Linux for 64-bit PCs (meta-package)
 This package depends on the latest Linux kernel.

Package: python3.11-minimal
Version: 3.11.2-6+deb12u9
Depends: libpython3.11-minimal (= 3.11.2-6+deb12u9), libexpat1 (>= 2.1~beta3), \
zlib1g (>= 1:1.2.0) | zlib-ng
"""


def test_one_call_resolves_versions_and_dependencies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[list[str]] = []

    def run_tool(command: list[str], **_: object) -> str:
        calls.append(command)
        return APT_CACHE_SHOW

    monkeypatch.setattr(debian, "run_tool", run_tool)
    found = candidates(["linux-image-amd64", "python3.11-minimal"])

    assert len(calls) == 1
    assert found["linux-image-amd64"] == (
        PackageVersion("linux-image-amd64", "6.1.192-3"),
        ["linux-image-6.1.0-57-amd64"],
    )
    assert found["python3.11-minimal"][1] == [
        "libpython3.11-minimal",
        "libexpat1",
        "zlib1g",
    ]
    assert (
        found["python3.11-minimal"][0].pinned == "python3.11-minimal=3.11.2-6+deb12u9"
    )


def test_a_package_apt_does_not_show_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(debian, "run_tool", lambda command, **_: APT_CACHE_SHOW)
    with pytest.raises(
        ImageBuildFailed, match="no version of busybox-static"
    ) as caught:
        candidates(["linux-image-amd64", "busybox-static"])
    assert caught.value.hint is not None and "apt-get update" in caught.value.hint
