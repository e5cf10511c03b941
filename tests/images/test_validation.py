from __future__ import annotations

import json
from pathlib import Path

import pytest

from devdep.cli.main import run
from devdep.config.loader import ConfigError, load_config
from devdep.config.template import render_template
from devdep.errors import ExitCode
from devdep.images.validation import check_base_images
from tests.images.fakestore import populate


def config_with_base_os(tmp_path: Path, base_os: str) -> Path:
    text = render_template("Acme Corp", "k8s.prod.acme.com", "production")
    text = text.replace("debian-bookworm-minimal", base_os)
    assert base_os in text
    path = tmp_path / "devdep.yaml"
    path.write_text(text)
    return path


def test_a_stored_base_os_passes(tmp_path: Path) -> None:
    store = populate(tmp_path / "store")
    check_base_images(
        load_config(config_with_base_os(tmp_path, store.names()[0])), store
    )


def test_an_unknown_base_os_is_placed_at_its_line(tmp_path: Path) -> None:
    store = populate(tmp_path / "store")
    path = config_with_base_os(tmp_path, "minimal-alpine-3.18")
    line = next(
        number
        for number, text in enumerate(path.read_text().splitlines(), start=1)
        if "minimal-alpine-3.18" in text
    )
    with pytest.raises(ConfigError) as caught:
        check_base_images(load_config(path), store)
    (detail,) = caught.value.details
    assert detail.startswith(f"{path}:{line}:")
    assert "image 'minimal-alpine-3.18' is not in the image store" in detail
    assert "it holds: debian-bookworm-minimal" in detail
    assert "devdep-cli image build-base" in detail


def test_validate_exits_2_and_lists_the_store(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    populate(tmp_path / "store", images=("debian-bookworm-minimal", "ubuntu-24.04"))
    monkeypatch.setenv("DEVDEP_IMAGE_STORE", str(tmp_path / "store"))
    path = config_with_base_os(tmp_path, "minimal-alpine-3.18")

    code = run(["validate", "--file", str(path), "--output", "json"])

    assert code == ExitCode.ERR_USAGE
    error = json.loads(capsys.readouterr().out)["error"]
    assert "debian-bookworm-minimal, ubuntu-24.04" in error["details"][0]


def test_validate_accepts_a_stored_image(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    populate(tmp_path / "store")
    monkeypatch.setenv("DEVDEP_IMAGE_STORE", str(tmp_path / "store"))
    path = config_with_base_os(tmp_path, "debian-bookworm-minimal")

    assert run(["validate", "--file", str(path)]) == ExitCode.SUCCESS
    assert "[SUCCESS]" in capsys.readouterr().out
