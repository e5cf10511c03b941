"""The errors of the image store and its builders.

Every one is a UsageError (exit 2): the user fixes it by building or naming an
image, never by retrying the run::

    UsageError
     └── ImageError
          ├── ImageNotFound        a base_os the store does not hold
          ├── KernelMissing        no guest kernel or initramfs yet
          ├── AgentRuntimeMissing  no agent runtime disk, or one built from
          │                        other agent sources than the installed ones
          ├── ImageCorrupt         a stored file whose SHA-384 no longer matches
          └── ImageBuildFailed     apt-get, dpkg, debootstrap or mkfs.ext4 failed
"""

from __future__ import annotations

from devdep.errors import UsageError


class ImageError(UsageError):
    """The root of the image store's errors."""


class ImageNotFound(ImageError):
    """The store holds no image of the requested name."""

    def __init__(self, name: str, available: list[str]) -> None:
        held = ", ".join(available) if available else "none"
        super().__init__(
            f"image {name!r} is not in the image store (it holds: {held})",
            hint="build the default image with 'devdep-cli image build-base', "
            "and see 'devdep-cli image ls' and docs/images.md to add others",
        )
        self.name = name
        self.available = available


class KernelMissing(ImageError):
    """The store holds no guest kernel or no boot initramfs."""

    def __init__(self, message: str) -> None:
        super().__init__(message, hint="run devdep-cli image kernel")


class AgentRuntimeMissing(ImageError):
    """The store holds no agent runtime disk, or a stale one."""

    def __init__(self, message: str) -> None:
        super().__init__(message, hint="run devdep-cli image agent")


class ImageCorrupt(ImageError):
    """A stored file's SHA-384 differs from the one recorded when it was built."""


class ImageBuildFailed(ImageError):
    """A tool that builds an image failed; carries its command and output tail."""
