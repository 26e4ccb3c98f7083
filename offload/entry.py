"""The `offload` command's entry point: the commands that reach a host go to the link keeper, the rest to the CLI.

Kept to the standard library so that a command through a running keeper never imports typer, paramiko or
yaml (see offload/keeper/); anything the keeper cannot take is run here, by the same CLI.
"""
from __future__ import annotations

import sys

# Each of these opens a link to a host (or the local agent): the keeper's kept one saves its handshakes.
KEPT_LINK_COMMANDS = ("run", "logs", "status", "stop", "fetch", "sync")


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] and argv[0] in KEPT_LINK_COMMANDS:
        from offload import keeper_client  # lazy: the CLI's own commands need none of it

        try:
            code = keeper_client.run(argv)
        except KeyboardInterrupt:  # before the keeper took the command (while one started): nothing began
            sys.exit(130)
        if code is not None:
            sys.exit(code)
    from offload.cli.app import main as cli_main  # lazy: typer and friends, only where no keeper runs the command

    cli_main()
