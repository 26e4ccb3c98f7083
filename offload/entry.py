"""The `offload` command's entry point: `offload sync` goes to the link keeper, the rest to the CLI.

Kept to the standard library so that a sync through a running keeper never imports typer, paramiko or
yaml (see keeper.py); anything the keeper cannot do is run here, by the same CLI.
"""
from __future__ import annotations

import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["sync"]:
        from offload import keeper_client

        try:
            code = keeper_client.run(argv)
        except KeyboardInterrupt:  # the keeper sees us go and stops the sync
            sys.exit(130)
        if code is not None:
            sys.exit(code)
    from offload.cli.app import main as cli_main

    cli_main()
