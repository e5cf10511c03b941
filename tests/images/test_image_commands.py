from __future__ import annotations

import json
from pathlib import Path

import pytest

from devdep.cli.main import run
from devdep.errors import ExitCode
from devdep.images.boot import ImageStore
from devdep.images.digests import file_sha384
from devdep.images.ext4 import make_ext4
from tests.images.fakestore import populate


def test_ls_lists_images_kernel_and_agent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = populate(tmp_path)
    assert run(["image", "ls", "--store", str(tmp_path)]) == ExitCode.SUCCESS
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"image store {tmp_path}"
    assert lines[1].split() == ["NAME", "KIND", "SIZE", "SHA-384", "CREATED"]
    rootfs = store.image_manifest("debian-bookworm-minimal")
    assert rootfs is not None
    assert any(
        line.split()[:2] == ["debian-bookworm-minimal", "image"]
        and rootfs.sha384[:16] in line
        for line in lines
    )
    assert any(line.split()[1:2] == ["kernel"] for line in lines)
    assert any(line.split()[1:2] == ["agent"] for line in lines)


def test_ls_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    populate(tmp_path)
    assert run(["image", "ls", "--store", str(tmp_path), "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [image["name"] for image in document["images"]] == [
        "debian-bookworm-minimal"
    ]
    assert document["kernel"]["name"] == "6.1.0-test-amd64"
    assert document["agent"]["kind"] == "agent"
    assert len(document["images"][0]["sha384"]) == 96


def test_ls_of_an_empty_store_says_how_to_fill_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["image", "ls", "--store", str(tmp_path)]) == 0
    assert "devdep-cli image build-base" in capsys.readouterr().out


def test_import_refuses_a_file_that_is_not_ext4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "bogus.img"
    bogus.write_bytes(b"\0" * 4096)
    code = run(["image", "import", "mine", str(bogus), "--store", str(tmp_path / "s")])
    assert code == ExitCode.ERR_USAGE
    assert "is not an ext4 file system" in capsys.readouterr().err


def test_import_stores_an_ext4_file_with_its_digest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "os-release").write_text("ID=mine\n")
    image = tmp_path / "mine.ext4"
    make_ext4(tree, image, label="mine", journal=True)
    store = tmp_path / "store"

    code = run(
        ["image", "import", "mine", str(image), "--store", str(store), "-o", "json"]
    )

    assert code == ExitCode.SUCCESS
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert result["sha384"] == file_sha384(image)
    assert ImageStore(store).names() == ["mine"]
    assert run(["image", "import", "mine", str(image), "--store", str(store)]) == 2
    assert "already in the store" in capsys.readouterr().err
