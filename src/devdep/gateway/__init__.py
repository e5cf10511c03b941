"""The gateway: the HTTP service that exchanges ID tokens for 15-minute
session tickets, keeps them in the store, and ends them on time.

`build_gateway` wires the store, the token verifier, the termination hooks and
the sweeper into a FastAPI app; `serve` runs it under uvicorn. The client side
used by `devdep-cli auth` and `status` is in `devdep.gateway.client`.
"""
