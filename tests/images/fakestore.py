"""An image store with small stand-in files, for tests that need a store's
layout and manifests but boot nothing."""

from __future__ import annotations

from pathlib import Path

from devdep.images.boot import ImageStore, guest_sources_digest
from devdep.images.digests import bytes_sha384
from devdep.images.manifest import Manifest, write_manifest


def _put(
    store: ImageStore,
    slot: str,
    kind: str,
    name: str,
    file: str,
    content: bytes,
    details: dict[str, object] | None = None,
) -> Manifest:
    directory = store.root / slot
    directory.mkdir(parents=True, exist_ok=True)
    (directory / file).write_bytes(content)
    manifest = Manifest(
        kind=kind,
        name=name,
        file=file,
        sha384=bytes_sha384(content),
        size=len(content),
        created="2026-01-01T00:00:00+00:00",
        inputs="test",
        details=details or {},
    )
    write_manifest(directory, manifest)
    return manifest


def populate(
    root: Path,
    *,
    images: tuple[str, ...] = ("debian-bookworm-minimal",),
    kernel: bool = True,
    agent: bool = True,
) -> ImageStore:
    store = ImageStore(root)
    if kernel:
        built = _put(store, "kernel", "kernel", "6.1.0-test-amd64", "vmlinux", b"k")
        _put(
            store,
            "initramfs",
            "initramfs",
            "initramfs-6.1.0-test-amd64",
            "initramfs.cpio",
            b"i",
            {"kernel_sha384": built.sha384},
        )
    if agent:
        _put(
            store,
            "agent",
            "agent",
            "python3.11-agent",
            "agent.ext4",
            b"a",
            {"agent_sources": guest_sources_digest()},
        )
    for name in images:
        _put(store, f"images/{name}", "image", name, "rootfs.ext4", name.encode())
    return store
