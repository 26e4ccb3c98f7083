"""Layout that fits the terminal: `runs` and `hosts check` at 80 columns with no cell cut mid-word, the summary
never padded when piped, and `--help` in plain words, through the real CLI (COLUMNS is the width a pipe asks for)."""
from __future__ import annotations

import re

import pytest
from rich.console import Console

from conftest import register_host, run_offload
from offload.cli.app import app
from offload.cli.help_layout import plain_command
from offload.cli.hosts_check import print_rows
from offload.cli.runs_list import runs_table
from offload.runs.record import load_runs
from test_host_facts import table_rows

ARGS = ["config/train_small.py", "--batch_size=32", "--max_iters=1000", "--learning_rate=6e-4", "--compile=False"]


def words_of(text: str) -> list:
    return text.split()


def assert_fits(shown: str, width: int = 80) -> None:
    lines = shown.splitlines()
    assert lines and all(len(line) <= width for line in lines), "\n".join(lines)


def test_runs_at_80_columns_keep_each_id_whole_and_wrap_the_command_at_spaces(box, project):
    for _ in range(3):
        assert run_offload("run", "report.py", *ARGS, cwd=project).returncode == 0
    metas = load_runs(project)
    listed = run_offload("runs", env={"COLUMNS": "80"}, cwd=project)
    assert listed.returncode == 0, listed.stderr
    assert_fits(listed.stdout)
    shown_words = words_of(listed.stdout)
    for meta in metas:
        assert meta["run_id"] in shown_words  # whole, on one line
    for word in ["report.py", *ARGS, "box", *words_of(metas[0]["device"])]:
        assert word in shown_words, (word, listed.stdout)
    assert "command" in listed.stdout

    newest = run_offload("runs", "-n", "2", env={"COLUMNS": "80"}, cwd=project)
    assert [m["run_id"] in newest.stdout for m in metas] == [False, True, True]
    assert "the newest 2 of 3 runs; `offload runs --all` lists every one" in newest.stderr
    assert all(m["run_id"] in run_offload("runs", "--all", "-n", "1", cwd=project).stdout for m in metas)
    assert run_offload("runs", "--host", "box", cwd=project).stdout.count("box") == 3
    elsewhere = run_offload("runs", "--host", "other", cwd=project)
    assert elsewhere.returncode == 0 and "no runs on other recorded" in elsewhere.stderr


def test_hosts_check_at_80_columns_stacks_each_host_and_cuts_no_cell(offload_home, sshd):
    register_host(offload_home, sshd, name="box", workdir="~/w")
    wide = run_offload("hosts", "check", env={"COLUMNS": "400"})
    narrow = run_offload("hosts", "check", env={"COLUMNS": "80"})
    assert wide.returncode == narrow.returncode == 0, narrow.stderr
    assert_fits(narrow.stdout)
    cells = table_rows(wide.stdout)["box"]
    shown = narrow.stdout.splitlines()
    for column, cell in cells.items():
        line = next((line for line in shown if line.startswith(column + " ")), None)
        assert line is not None, (column, narrow.stdout)
        if column == "free disk":  # the disk's free bytes move between the two checks: its words stay
            cell = re.sub(r"[0-9.]+", "", cell)
        for word in words_of(cell):
            assert word in words_of(narrow.stdout), (column, word, narrow.stdout)
    assert "cpu flags" not in wide.stdout and "cpu flags" not in narrow.stdout
    verbose = run_offload("hosts", "check", "--verbose", env={"COLUMNS": "80"})
    assert_fits(verbose.stdout)
    assert re.search(r"^cpu flags +\S", verbose.stdout, re.MULTILINE), verbose.stdout


def test_a_rich_console_of_80_columns_gets_both_tables_whole():
    console = Console(width=80, record=True)
    row = {"host": "4070ti (alice@192.168.100.150:2222)", "reachable": "yes", "auth": "ok",
           "python": "3.11.9 (venv) /home/alice/venvs/torch-2.4-cu121/bin/python", "torch": "2.4.1+cu121",
           "cuda": "yes 12.1 (driver 550.54.14, cc 8.9)", "gpus": "NVIDIA GeForce RTX 4070 Ti (12 GiB)",
           "cpu": "AMD Ryzen 9 7950X 16-Core Processor: 16 cores, 1 socket, 5.88 GHz",
           "peak TFLOPS": "bf16 80.2, fp32 40.1", "free disk": "1.2 TB in ~/offload",
           "survives logout": "no: KillUserProcesses=yes (fix: loginctl enable-linger alice)"}
    print_rows([row, {**row, "host": "box2 (10.0.0.2)"}], console)
    meta = {"run_id": "20260102-030405-ab12", "host": "4070ti", "device": "NVIDIA GeForce RTX 4070 Ti",
            "started_unix": 1.0, "ended_unix": 106.0, "exit_code": 0, "final_loss": 2.3456, "mfu": 0.123,
            "script": "train.py", "args": ARGS}
    console.print(runs_table([meta, {**meta, "run_id": "20260102-030406-cd34", "exit_code": None}], console.width))
    shown = console.export_text()
    assert_fits(shown)
    for word in [*words_of(" ".join(row.values())), meta["run_id"], "20260102-030406-cd34", *ARGS, "running?"]:
        assert word in words_of(shown), (word, shown)


def test_the_summary_is_plain_lines_when_piped(box, project):
    (project / "nano.py").write_text(
        "for it in range(6):\n    print(f'iter {it}: loss {3.0 - it / 10:.4f}, time 20.00ms, mfu 1.00%')\n")
    result = run_offload("run", "nano.py", cwd=project)
    assert result.returncode == 0, result.stderr
    summary = [line for line in result.stderr.splitlines() if line.startswith("  ")]
    assert any(line.split()[0] == "MFU" for line in summary), result.stderr
    assert all(line == line.rstrip() for line in summary), [line for line in summary if line != line.rstrip()]


def every_command(command, path=()):
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from every_command(sub, (*path, name))
    if not getattr(command, "commands", None):
        yield path, command


COMMANDS = [path for path, _ in every_command(plain_command(app))]


def test_every_option_has_help_and_every_description_is_a_sentence():
    for path, command in every_command(plain_command(app)):
        description = (command.help or "").strip()
        assert description[:1].isupper() and description.endswith("."), (path, description)
        for param in command.params:
            assert (param.help or "").strip().endswith("."), (path, param.name)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_shows_plain_metavars(offload_home, path):
    shown = run_offload(*path, "--help").stdout
    assert shown.startswith(f"Usage: offload {' '.join(path)} [OPTIONS]"), shown
    assert not re.search(r"<(str|int|float|bool|path|list)", shown), shown
    assert "[default: " not in shown or re.search(r"\[default: [^]]+\]", shown)
    if path == ("run",):
        assert "[SCRIPT] [ARGS]..." in shown and "--nproc-per-node INTEGER" in shown and "--host TEXT" in shown
        assert "-d, --detach  " in shown  # a flag takes no value
    if path == ("hosts", "add"):
        assert "[user@]hostname[:port]" in shown  # brackets in help are text, not markup
