"""Sub-commands of `twin-pipeline`, discovered at start-up.

Each module here defines `register(subparsers)` that adds one or more sub-parsers and sets
`func=<callable(args) -> int>` on them. `cli.py` calls every module's `register` in name order, so a
new command is a new file, not an edit of a shared one.
"""
