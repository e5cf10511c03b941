"""Run reports: what ran, how long each phase took, and SHA-384 digests of what
it ran on."""
