"""devdep.yaml: its schema, the loader that reports every error with its location,
and the template written by `devdep-cli init`."""
