"""Link benchmark (issue 14): `offload sync` against rsync -a, rsync -az and tar|zstd -1|ssh over a rate-limited link.

    .venv/bin/python bench/bench_link.py              # 100mbit and 1gbit: the ML project, the source tree
    .venv/bin/python bench/bench_link.py --quick      # a quarter-size ML project; the source tree at 100mbit,
                                                      # offload and rsync -a only (about 5 minutes)
    .venv/bin/python bench/bench_link.py --big --many # also the loopback cases: 1 GiB random, 100,000 small files

Run as root (it needs network namespaces and tc). The host is a real sshd in its own network namespace
(tests/netns_hosts.py), reached through a veth pair with `tc qdisc ... tbf rate RATE burst 256kb latency 50ms`
on both ends; the loopback cases use the tests' sshd on 127.0.0.1. Each case gets a fresh OFFLOAD_HOME; every
copy is checked byte for byte (a digest of the trees); the table gives medians, offload's ratios, the bytes
on the wire and PASS/MISS per target, and offload's peak memory (link_memory.py). Everything it makes (namespaces, veths, qdiscs, sshd, offload's link
keepers, temporary trees) is removed on the way out, on failure and on Ctrl-C or SIGTERM too.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent), str(BENCH.parent / "tests")]  # helpers; this offload; the tests' sshd

import link_data  # noqa: E402  (found through the path set just above)
from link_cases import edited, first_sync, ml_cases  # noqa: E402
from link_net import loopback_link, namespaced_link  # noqa: E402
from link_report import print_memory, print_table  # noqa: E402
from link_tools import OFFLOAD, RSYNC, RSYNC_Z, SSH_PIPE, TAR_ZSTD, Tools  # noqa: E402

RATES = ("100mbit", "1gbit")
QUICK_SCALE = 0.25    # --quick: the ML project's two big files at a quarter of their size
BIG_FILE_BYTES = 1 << 30
NEEDED = ("ip", "tc", "rsync", "ssh", "tar")


def interrupted(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through every cleanup, as Ctrl-C does


def link_rows(scratch: Path, options, first_tools: tuple, rows: list) -> None:
    """The ML project and the source tree at each rate, through one namespaced host; each row goes into rows
    as it is done, so a failure later still shows the ones before it."""
    project, tree = scratch / "laptop" / "mlproject", scratch / "laptop" / "stdlib"
    link_data.say(f"ML project: text from {link_data.make_ml_project(project, options.scale)}")
    link_data.say(f"source tree: {link_data.make_source_tree(tree)}")
    with contextlib.ExitStack() as stack:
        link = stack.enter_context(namespaced_link(scratch / "netns"))
        tools = Tools(link, scratch / "link")
        stack.callback(tools.stop_keeper)  # before the sshd it talks to goes
        for rate in options.rates:
            link.limit(rate)
            link_data.say(f"link: tbf rate {rate} on {link.laptop_iface} and {link.namespace}:{link.host_iface}")
            ml_cases(tools, project, first_tools, options.repeat, rows)
            if rate == RATES[0] or not options.quick:  # the target is at 100mbit, against rsync -a
                tree_tools = (OFFLOAD, RSYNC) if options.quick else first_tools
                rows.append(first_sync(tools, tree, tree_tools, options.repeat, "source tree first sync"))
            shutil.rmtree(tools.scratch / "host", ignore_errors=True)


def loopback_rows(scratch: Path, options, rows: list) -> None:
    """1 GiB random (against the OpenSSH pipe) and 100,000 small files, over the tests' loopback sshd."""
    with contextlib.ExitStack() as stack:
        link = stack.enter_context(loopback_link(scratch / "sshd"))
        tools = Tools(link, scratch / "loop")
        stack.callback(tools.stop_keeper)
        if options.big:
            source = scratch / "laptop" / "random1g"
            link_data.make_big_file(source, BIG_FILE_BYTES)
            rows.append(first_sync(tools, source, (OFFLOAD, SSH_PIPE, RSYNC), options.repeat, "1 GiB random first sync"))
            shutil.rmtree(source)
            shutil.rmtree(tools.scratch / "host", ignore_errors=True)
        if options.many:
            source = scratch / "laptop" / "many"
            link_data.make_many_files(source)
            rows.append(first_sync(tools, source, (OFFLOAD, RSYNC), options.repeat, "100k files first sync"))
            rows.append(edited(tools, source, options.repeat, "100k files nothing changed", None))


def parse_options():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"the ML project's big files at {QUICK_SCALE:g} of their size; the source tree at {RATES[0]}, "
                             "offload and rsync -a only")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case and tool; the median is shown (default 3)")
    parser.add_argument("--rates", default=",".join(RATES), help="comma-separated tc rates (default 100mbit,1gbit)")
    parser.add_argument("--big", action="store_true", help="also 1 GiB random over loopback, against ssh 'cat > f'")
    parser.add_argument("--many", action="store_true", help="also 100,000 small files (400 MB) over loopback")
    parser.add_argument("--no-link", dest="link", action="store_false", help="skip the rate-limited cases")
    options = parser.parse_args()
    options.rates = options.rates.split(",")
    options.scale = QUICK_SCALE if options.quick else 1.0
    if options.repeat < 1:
        parser.error("--repeat must be at least 1")
    if os.geteuid() != 0:
        parser.error("run as root: the host lives in a network namespace behind tc")
    missing = [name for name in NEEDED if shutil.which(name) is None]
    if missing:
        parser.error(f"missing {', '.join(missing)}: apt-get install iproute2 rsync openssh-client tar")
    return options


def main() -> None:
    options = parse_options()
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    first_tools = (OFFLOAD, RSYNC, RSYNC_Z, TAR_ZSTD)
    if shutil.which("zstd") is None:
        first_tools = first_tools[:-1]
        link_data.say("note: no zstd binary here: the tar|zstd -1|ssh column is skipped")
    version = subprocess.run(["rsync", "--version"], capture_output=True, text=True).stdout
    codecs = version.split("Compress list:")[-1].splitlines()[1].strip() if "Compress list:" in version else "zlib"
    link_data.say(f"rsync -z uses the first codec both ends have: {codecs} (the same rsync on both ends)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_link.") as scratch_name:
        scratch = Path(scratch_name)
        try:
            if options.link:
                link_rows(scratch, options, first_tools, rows)
            if options.big or options.many:
                loopback_rows(scratch, options, rows)
        except KeyboardInterrupt:
            link_data.say("bench_link: interrupted; everything it made is removed")
            sys.exit(130)
        finally:
            print_table(rows, options.repeat)  # the rows done so far, whatever stopped the rest
            print_memory(rows)


if __name__ == "__main__":
    main()
