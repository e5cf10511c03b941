"""Guest kernels, the boot initramfs, the agent runtime disk and rootfs images:
what a micro-VM boots from, kept in the image store with their SHA-384."""

from devdep.images.boot import AGENT_PORT_NAME, BootSpec, Disk, ImageStore
from devdep.images.errors import (
    AgentRuntimeMissing,
    ImageBuildFailed,
    ImageCorrupt,
    ImageError,
    ImageNotFound,
    KernelMissing,
)

__all__ = [
    "AGENT_PORT_NAME",
    "AgentRuntimeMissing",
    "BootSpec",
    "Disk",
    "ImageBuildFailed",
    "ImageCorrupt",
    "ImageError",
    "ImageNotFound",
    "ImageStore",
    "KernelMissing",
]
