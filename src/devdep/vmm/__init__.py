"""Virtual machine monitors: start, watch and stop micro-VMs, knowing nothing of
jobs."""
