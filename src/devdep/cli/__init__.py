"""`devdep-cli`: the command-line interface. Commands parse, call and print; the
work itself lives in the packages below."""
