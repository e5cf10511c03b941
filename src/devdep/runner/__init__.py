"""The host agent: runs a pipeline's runtimes through their lifecycle hooks."""
