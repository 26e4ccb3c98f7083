"""offload.diagnose: the missing file a failed run names, read from recorded real stderr
(tests/data/missing-files/), and end to end: the diagnosis, its command, and the offer to run again on a pty."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

import terminal
from conftest import run_offload

from offload.runs.diagnose import find_missing, missing_paths, project_relpath, with_include
from offload.sync.selection import select_files

RECORDINGS = Path(__file__).resolve().parent / "data" / "missing-files"
RECORDED_PROJECT_DIR = "/tmp/offload-record/workdir/proj-1a2b3c4d"  # where record.py ran them
PROMPT = b"send it and run again? [Y/n] "
PTY_DEADLINE_S = 90


@pytest.mark.parametrize("recording, missing", [
    ("open.txt", "data/tinyshakespeare/input.txt"),
    ("memmap.txt", "data/x/train.bin"),
    ("pickle.txt", "data/shakespeare_char/meta.pkl"),
    ("torch-load.txt", "out/ckpt.pt"),
    ("np-load.txt", "data/tokens.npy"),
    ("np-loadtxt.txt", "data/labels.txt"),
    ("absolute.txt", f"{RECORDED_PROJECT_DIR}/data/shakespeare_char/val.bin"),
    ("nanogpt-train.txt", "data/shakespeare_char/train.bin"),
])
def test_the_missing_path_is_read_from_real_error_output(recording, missing):
    assert missing_paths((RECORDINGS / recording).read_text()) == [missing]


def test_quoting_and_noise():
    output = ("loading\nOSError: [Errno 2] No such file or directory: \"it's/here.bin\"\n"
              "[rank0]: FileNotFoundError: [Errno 2] No such file or directory: 'a b/c.pt'\n"
              "No such file or directory: 'cut off\nmodel.py: ok, not found.\n")
    assert missing_paths(output) == ["it's/here.bin", "a b/c.pt"]


@pytest.mark.parametrize("path, expected", [
    ("data/x.bin", "data/x.bin"), ("./data/../data/x.bin", "data/x.bin"),
    (f"{RECORDED_PROJECT_DIR}/data/x.bin", "data/x.bin"), ("/etc/passwd", None), ("../outside.bin", None),
    (f"{RECORDED_PROJECT_DIR}-other/x.bin", None), (RECORDED_PROJECT_DIR, None),
])
def test_project_relpath(path, expected):
    assert project_relpath(path, RECORDED_PROJECT_DIR) == expected


def test_the_include_goes_right_before_the_script():
    assert with_include(["run", "--host", "box", "train.py", "--batch_size=8"], "train.py", ["--batch_size=8"],
                        "data/x.bin") == ["run", "--host", "box", "--include", "data/x.bin", "train.py", "--batch_size=8"]
    assert with_include(["run", "train.py", "train.py"], "train.py", ["train.py"], "a") == [
        "run", "--include", "a", "train.py", "train.py"]
    assert with_include(["run", "--resume", "r1"], "train.py", ["--x"], "a") == ["run", "--resume", "r1", "--include", "a"]


def nanogpt_project(root: Path, gitignore: str) -> Path:
    for relpath in ("train.py", "data/shakespeare_char/prepare.py"):
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_text("")
    (root / "data/shakespeare_char/train.bin").write_bytes(b"\0" * 100)
    (root / ".gitignore").write_text(gitignore)
    return root


def diagnosis(root: Path, **selection):
    return find_missing((RECORDINGS / "nanogpt-train.txt").read_text(), RECORDED_PROJECT_DIR, root,
                        select_files(root, **selection), "box", ["run", "--host", "box", "train.py"], "train.py", [])


def test_a_file_in_an_ignored_directory_is_diagnosed_with_its_rule_and_command(tmp_path):
    missing = diagnosis(nanogpt_project(tmp_path, "*.bin\ndata/\n"))
    assert missing.path == "data/shakespeare_char/train.bin"
    assert missing.message == (
        "the run needed data/shakespeare_char/train.bin, which was not sent to box (excluded by .gitignore:2: data/ "
        "(excludes its directory data/)); send it with: offload run --host box --include "
        "data/shakespeare_char/train.bin train.py")


def test_a_file_over_the_budget_is_diagnosed_as_such(tmp_path):
    missing = diagnosis(nanogpt_project(tmp_path, "*.bin\n"), data_budget=10)
    assert missing.reason == "over the 10 B data budget"


def test_no_diagnosis_for_a_file_that_was_sent_or_that_the_laptop_lacks_too(tmp_path):
    root = nanogpt_project(tmp_path, "*.bin\n")
    assert diagnosis(root) is None  # sent beside prepare.py: the job missed it for another reason
    (root / "data/shakespeare_char/train.bin").unlink()
    (root / ".gitignore").write_text("data/\n")
    assert diagnosis(root) is None


# --- end to end ---------------------------------------------------------------------------------------------

NEEDS_TOKENS = ("import sys\n"
                "with open('data/cache/tokens.bin', 'rb') as f:\n"
                "    print('tokens:', f.read().decode())\n")


def tokens_project(project: Path) -> Path:
    (project / ".gitignore").write_text("data/cache/\n")
    (project / "data" / "cache").mkdir(parents=True)
    (project / "data" / "cache" / "tokens.bin").write_text("abc")
    (project / "train.py").write_text(NEEDS_TOKENS)
    return project


def test_a_run_missing_an_ignored_file_says_which_and_the_command_it_gives_works(box, project):
    tokens_project(project)
    failed = run_offload("run", "--host", "box", "train.py", cwd=project)
    assert failed.returncode == 1
    expected = ("offload: the run needed data/cache/tokens.bin, which was not sent to box (excluded by "
                ".gitignore:1: data/cache/ (excludes its directory data/cache/)); send it with: "
                "offload run --host box --include data/cache/tokens.bin train.py")
    assert expected in failed.stderr.splitlines()
    assert "send it and run again" not in failed.stderr  # not a terminal: no question

    command = shlex.split(expected.rpartition("send it with: ")[2])
    assert command[0] == "offload"
    rerun = run_offload(*command[1:], cwd=project)
    assert rerun.returncode == 0, rerun.stderr
    assert "tokens: abc" in rerun.stdout


def run_in_terminal(args: list, cwd: Path, answer: bytes) -> tuple:
    return terminal.run_in_terminal(args, answer, PROMPT, cwd=cwd, deadline_s=PTY_DEADLINE_S)


@pytest.mark.parametrize("answer, code", [(b"\n", 0), (b"y\n", 0), (b"n\n", 1)])
def test_in_a_terminal_it_offers_to_send_the_file_and_run_again(box, project, answer, code):
    tokens_project(project)
    exit_code, shown = run_in_terminal(["run", "--host", "box", "train.py"], project, answer)
    assert "send it and run again? [Y/n]" in shown
    assert exit_code == code, shown
    assert ("tokens: abc" in shown) == (code == 0)
    runs = sorted((project / ".offload" / "runs").iterdir())
    assert len(runs) == (2 if code == 0 else 1)
