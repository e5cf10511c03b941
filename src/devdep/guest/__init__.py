"""The guest agent that runs inside every job's micro-VM, and its wire protocol.

This package ships into the VM's agent runtime disk, so it uses only the Python
standard library and imports nothing else of devdep. It is also imported on the
host, where `devdep.guest.client` drives the agent.
"""

# The devdep release this agent belongs to, reported in the agent's HELLO. It is
# written out rather than read from package metadata because the guest has no
# installed distribution to read it from (a test keeps the two in step).
AGENT_VERSION = "4.2.0"
