"""DEVELOPMENT DEPLOYER: a self-hosted build-pipeline runner that runs every job in
its own fresh micro-VM."""

from importlib.metadata import PackageNotFoundError, version

PROTOCOL_VERSION = "4.2"

try:
    __version__ = version("devdep")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
