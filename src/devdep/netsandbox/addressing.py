"""Names and addresses of one run's network: what the kernel objects are called,
and which /29 of devdep's private pool the run uses.

Every run gets one /29 from the pool, split into two /30 links::

    slot base + 0 .. 3   the veth link: uplink end .1, run namespace end .2
    slot base + 4 .. 7   the tap link:  gateway (run namespace) .5, guest .6

The pool's addresses exist only on devdep's own links: the uplink end of each
run's veth pair, and inside the run's namespace. The guest's traffic leaves the
run namespace masqueraded to the .2 address, so nothing outside needs a route
to the guest's link.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass

from devdep.netsandbox.errors import EgressPolicyError

DEFAULT_POOL = ipaddress.IPv4Network("10.213.0.0/16")
SLOT_PREFIX = 29

NETNS_PREFIX = "devdep-"
UPLINK_VETH_PREFIX = "ddh-"  # the veth end in the uplink namespace
RUN_VETH_PREFIX = "ddn-"  # its peer, inside the run's namespace
TAP_NAME = "dd-tap0"  # inside the run's namespace, so one name serves every run
NFT_TABLE = "devdep"  # inet table, inside the run's namespace

# Interface names hold at most IFNAMSIZ - 1 = 15 bytes.
IFNAMSIZ = 16
_NAME_TOKEN_LENGTH = IFNAMSIZ - 1 - len(UPLINK_VETH_PREFIX)
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise EgressPolicyError(
            f"run id {run_id!r} cannot name a network namespace: use 1-63 letters, "
            "digits, '.', '_' or '-'"
        )
    return run_id


def link_token(run_id: str) -> str:
    """The run's part of its veth names: the id itself when it fits, else a digest.

    A digest of a long id is stable, so the reaper can tell whose a link is.
    """
    if len(run_id) <= _NAME_TOKEN_LENGTH and re.match(r"^[A-Za-z0-9_.-]+$", run_id):
        return run_id
    return hashlib.blake2s(run_id.encode(), digest_size=8).hexdigest()[
        :_NAME_TOKEN_LENGTH
    ]


@dataclass(frozen=True)
class RunNames:
    run_id: str
    netns: str
    uplink_veth: str
    run_veth: str
    tap: str = TAP_NAME
    table: str = NFT_TABLE

    @classmethod
    def for_run(cls, run_id: str) -> RunNames:
        token = link_token(check_run_id(run_id))
        return cls(
            run_id=run_id,
            netns=NETNS_PREFIX + run_id,
            uplink_veth=UPLINK_VETH_PREFIX + token,
            run_veth=RUN_VETH_PREFIX + token,
        )


@dataclass(frozen=True)
class GuestNetwork:
    """What the guest needs to configure its one interface."""

    mac: str
    address: ipaddress.IPv4Interface  # the guest's address and prefix
    gateway: ipaddress.IPv4Address
    dns_server: ipaddress.IPv4Address | None

    def kernel_ip_argument(self, device: str = "eth0") -> str:
        """The `ip=` kernel argument (Documentation/admin-guide/nfs/nfsroot.rst form):
        `ip=<client>::<gateway>:<netmask>::<device>:off[:<dns>]`."""
        fields = [
            str(self.address.ip),
            "",
            str(self.gateway),
            str(self.address.netmask),
            "",
            device,
            "off",
        ]
        if self.dns_server is not None:
            fields.append(str(self.dns_server))
        return "ip=" + ":".join(fields)

    def as_dict(self) -> dict[str, object]:
        return {
            "mac": self.mac,
            "address": str(self.address),
            "gateway": str(self.gateway),
            "dns_server": None if self.dns_server is None else str(self.dns_server),
        }


@dataclass(frozen=True)
class RunAddresses:
    """The four addresses of one run's /29."""

    slot: ipaddress.IPv4Network
    uplink: ipaddress.IPv4Interface
    run: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Interface
    guest: ipaddress.IPv4Interface

    @classmethod
    def for_slot(cls, slot: ipaddress.IPv4Network) -> RunAddresses:
        if slot.prefixlen != SLOT_PREFIX:
            raise ValueError(f"a run's slot is a /{SLOT_PREFIX}, not {slot}")
        base = slot.network_address
        return cls(
            slot=slot,
            uplink=ipaddress.IPv4Interface(f"{base + 1}/30"),
            run=ipaddress.IPv4Interface(f"{base + 2}/30"),
            gateway=ipaddress.IPv4Interface(f"{base + 5}/30"),
            guest=ipaddress.IPv4Interface(f"{base + 6}/30"),
        )


def guest_mac(run_id: str) -> str:
    """A locally administered unicast MAC derived from the run id: 02:dd:xx:xx:xx:xx."""
    digest = hashlib.blake2s(run_id.encode(), digest_size=4).digest()
    return "02:dd:" + ":".join(f"{byte:02x}" for byte in digest)


def first_free_slot(
    pool: ipaddress.IPv4Network, used: set[ipaddress.IPv4Network]
) -> ipaddress.IPv4Network | None:
    for slot in pool.subnets(new_prefix=SLOT_PREFIX):
        if slot not in used:
            return slot
    return None


def slot_of(address: ipaddress.IPv4Address) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"{address}/{SLOT_PREFIX}", strict=False)
