"""offload: run PyTorch training on your own GPU box from a laptop.

The laptop's side, in layers; a module imports only from the layers below its own (`.importlinter` holds this,
and `make test` runs `lint-imports`):

    7  __main__
    6  entry, keeper/         the `offload` command's entry point; the link keeper that keeps SSH links warm
    5  cli/                   one module per command group: run, sync, logs/status/stop, fetch, runs, hosts
    4  runs/                  a run as one job of N nodes: record, nodes, connect, launch, start, setup, sinks,
                              follow, interrupt, outcome, resume, fetched files
    3  sync/                  which files travel (ignore rules, selection), blocks, push, the fetch engine
    2  transport/ | mfu/      host keys, ssh, the agent client, Link and its reconnect, open_link (the one
                              way to reach a target) | peaks, device, tracker, measurement, report;
                              neither imports the other
    1  config/                hosts registry, target resolution (ssh -G), project config, host state
    0  errors, paths, console, keeper_client   (console: say, prompts, sizes, tables, progress)

remote_agent/ is the host's side: standard library only, shipped to the host, never importing offload; what both
sides must agree on is defined once in remote_agent/protocol.py and imported from there by the laptop.
"""
__version__ = "0.1.0"
