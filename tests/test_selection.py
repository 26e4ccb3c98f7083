"""offload.selection on real directories: what the beside-rule adds, what --include reaches, what the report
names; the layouts of five real ML repositories, with their own .gitignore files (tests/data/gitignores/)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from test_ignore import ten_thousand_files
from conftest import run_offload
from test_sync import host_project_dir

from offload.errors import OffloadError
from offload.sync.scan import scan_project
from offload.config.project import parse
from offload.sync.selection import LeftOut, Selection, select_files, select_project, selection_lines

GITIGNORES = Path(__file__).resolve().parent / "data" / "gitignores"


def make(root: Path, files: dict) -> None:
    """files: relative path -> text content, or a size in bytes (a sparse file: sizes cost no disk)."""
    for relpath, content in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, int):
            with open(path, "wb") as f:
                f.truncate(content)
        else:
            path.write_text(content)


def paths(entries: list) -> set:
    return {entry.path for entry in entries if entry.kind != "dir"}


def left_out_paths(selection: Selection) -> set:
    return {item.path for item in selection.left_out}


def repo_tree(root: Path, repo: str, files: dict) -> Selection:
    make(root, {".gitignore": (GITIGNORES / f"{repo}.gitignore").read_text(), **files})
    return select_files(root)


# --- five real repositories: their .gitignore, the files their scripts really produce ---------------------

NANOGPT = {
    "train.py": "", "model.py": "", "sample.py": "", "configurator.py": "", "bench.py": "",
    "config/train_shakespeare_char.py": "",
    "data/shakespeare_char/prepare.py": "", "data/shakespeare_char/readme.md": "",
    "data/shakespeare_char/input.txt": 1_115_394, "data/shakespeare_char/train.bin": 2_007_686,
    "data/shakespeare_char/val.bin": 223_080, "data/shakespeare_char/meta.pkl": 703,
    "data/openwebtext/prepare.py": "", "data/openwebtext/readme.md": "",
    "data/openwebtext/val.bin": 8_500_000,
    "out-shakespeare-char/ckpt.pt": 127_000_000,
    "__pycache__/model.cpython-311.pyc": 40_000, ".DS_Store": 6_148, ".idea/workspace.xml": "<project/>",
    ".ipynb_checkpoints/scaling_laws-checkpoint.ipynb": "{}",
    "env/pyvenv.cfg": "home = /usr/bin\n", "env/lib/python3.11/site-packages/torch/__init__.py": "",
}


def test_nanogpt_sends_prepared_data_and_reports_the_checkpoint(tmp_path):
    selection = repo_tree(tmp_path, "nanoGPT", NANOGPT)
    assert paths(selection.added) == {
        "data/shakespeare_char/input.txt", "data/shakespeare_char/train.bin", "data/shakespeare_char/val.bin",
        "data/shakespeare_char/meta.pkl", "data/openwebtext/val.bin"}
    assert "data/shakespeare_char/train.bin" in paths(selection.entries)
    assert left_out_paths(selection) == {"out-shakespeare-char/ckpt.pt"}  # no bytecode, .DS_Store, env/
    assert not any(p.startswith(("env/", "__pycache__", ".idea", ".ipynb")) for p in paths(selection.entries))
    assert selection_lines(selection)[1] == (
        "sync: left out by ignore rules: out-shakespeare-char/ 127.0 MB (1 file) --include out-shakespeare-char/ckpt.pt")


def test_mingpt_sends_its_pylintrc_and_never_the_env_file(tmp_path):
    selection = repo_tree(tmp_path, "minGPT", {
        "setup.py": "", "mingpt/model.py": "", "mingpt/trainer.py": "", "mingpt/bpe.py": "",
        "projects/chargpt/chargpt.py": "", "projects/chargpt/input.txt": 1_115_394,
        "out/chargpt/model.pt": 10_000_000, "out/chargpt/config.json": "{}", "out/chargpt/args.txt": "",
        ".env": "WANDB_API_KEY=secret\n", ".pylintrc": "[MASTER]\n", "mingpt/.model.py.swp": 12_288,
        "mingpt/__pycache__/model.cpython-311.pyc": 30_000, ".ipynb_checkpoints/demo-checkpoint.ipynb": "{}",
    })
    assert paths(selection.added) == {".pylintrc"}
    assert {"projects/chargpt/input.txt", "out/chargpt/model.pt"} <= paths(selection.entries)  # not ignored at all
    assert ".env" not in paths(selection.entries) and not selection.left_out


def test_llm_c_sends_the_weights_train_gpt2_py_writes_and_reports_its_data_dirs(tmp_path):
    selection = repo_tree(tmp_path, "llm.c", {
        "train_gpt2.py": "", "train_gpt2.c": "", "train_gpt2.cu": "", "Makefile": "",
        "dev/data/tinyshakespeare.py": "", "dev/data/data_common.py": "", "dev/data/fineweb.py": "",
        "dev/data/tinyshakespeare/tiny_shakespeare_train.bin": 609_000,
        "dev/data/tinyshakespeare/tiny_shakespeare_val.bin": 65_000,
        "dev/data/fineweb10B/fineweb_train_000001.bin": 200_001_024,
        "dev/data/fineweb10B/fineweb_val_000000.bin": 200_001_024,
        "dev/data/__pycache__/data_common.cpython-311.pyc": 4_000,
        "gpt2_124M.bin": 548_105_171, "gpt2_124M_bf16.bin": 274_054_099,
        "gpt2_124M_debug_state.bin": 1_500_000, "gpt2_tokenizer.bin": 404_000,
        "train_gpt2cu": 1_800_000,  # the binary `make train_gpt2cu` built on the laptop
        "log124M/main.log": 50_000, "log124M/model_00005000.bin": 548_105_171,
        ".venv/pyvenv.cfg": "", ".vscode/settings.json": "{}",
    })
    assert paths(selection.added) == {"gpt2_124M.bin", "gpt2_124M_bf16.bin", "gpt2_124M_debug_state.bin",
                                      "gpt2_tokenizer.bin", "train_gpt2cu"}
    groups = {item.group for item in selection.left_out}
    assert groups == {"dev/data/tinyshakespeare", "dev/data/fineweb10B", "log124M"}
    line = selection_lines(selection)[1]
    assert line.startswith("sync: left out by ignore rules: log124M/ 548.2 MB (2 files) --include 'log124M/*'; "
                           "dev/data/fineweb10B/ 400.0 MB (2 files) --include 'dev/data/fineweb10B/**'; ")


def test_torchtitan_reports_its_tokenizer_and_outputs_and_skips_egg_info(tmp_path):
    selection = repo_tree(tmp_path, "torchtitan", {
        "pyproject.toml": "", "run_train.sh": "", "scripts/download_hf_assets.py": "",
        "torchtitan/train.py": "", "torchtitan/models/llama3/train_configs/debug_model.toml": "",
        "assets/hf/Llama-3.1-8B/tokenizer.json": 9_085_657, "assets/hf/Llama-3.1-8B/tokenizer_config.json": 55_351,
        "assets/hf/Llama-3.1-8B/original/tokenizer.model": 2_183_982,
        "outputs/checkpoint/step-10/__0_0.distcp": 50_000_000, "outputs/checkpoint/step-10/.metadata": 300_000,
        "outputs/tb/20250101-1200/events.out.tfevents.1735732800.host.1.0": 8_000,
        "wandb/run-20250101_120000-abc/files/output.log": 2_000, "error.json": '{"message": {}}',
        "debug_loss.py": "", "torchtitan.egg-info/PKG-INFO": "", ".env": "HF_TOKEN=secret\n",
        "torchtitan/__pycache__/train.cpython-311.pyc": 20_000,
    })
    assert paths(selection.added) == {"error.json", "debug_loss.py"}
    assert {item.group for item in selection.left_out} == {"assets/hf/Llama-3.1-8B", "outputs", "wandb"}
    assert "--include 'assets/hf/Llama-3.1-8B/**'" in selection_lines(selection)[1]
    assert not any("egg-info" in p or p == ".env" for p in paths(selection.entries) | left_out_paths(selection))


def test_litgpt_keeps_its_data_package_and_reports_checkpoints_data_and_out(tmp_path):
    selection = repo_tree(tmp_path, "litgpt", {
        "pyproject.toml": "", "litgpt/__init__.py": "", "litgpt/finetune/lora.py": "", "litgpt/data/alpaca.py": "",
        "uv.lock": 900_000, "client.py": "",
        "checkpoints/meta-llama/Llama-3.2-1B/lit_model.pth": 2_471_000_000,
        "checkpoints/meta-llama/Llama-3.2-1B/model_config.yaml": "", "checkpoints/meta-llama/Llama-3.2-1B/tokenizer.json": 9_085_657,
        "data/alpaca/alpaca_data_cleaned_archive.json": 44_300_000,
        "out/finetune/lora/final/lit_model.pth.lora": 9_000_000,
        "out/finetune/lora/logs/version_0/events.out.tfevents.1735732800.host": 4_000,
        "litgpt.egg-info/PKG-INFO": "", ".venv/pyvenv.cfg": "",
    })
    assert "litgpt/data/alpaca.py" in paths(selection.entries)  # `!litgpt/data` re-includes what `data` ignores
    assert paths(selection.added) == {"uv.lock", "client.py"}
    assert {item.group for item in selection.left_out} == {"checkpoints", "data", "out"}
    assert "checkpoints/ 2.5 GB (3 files) --include 'checkpoints/**'" in selection_lines(selection)[1]


# --- the rule's limits ------------------------------------------------------------------------------------

def test_secrets_junk_and_placeholders_are_never_sent_by_the_rule_nor_named(tmp_path):
    never = [".env", ".env.local", "key.pem", "server.key", "id_rsa", "id_ed25519.pub", ".netrc",
             "gcp-credentials.json", "model.pyc", ".DS_Store", "notes.txt.swp", "pkg.egg-info", "backup~"]
    make(tmp_path, {".gitignore": "\n".join(never + ["tokens.bin"]) + "\n", "train.py": "",
                    **{name: "x" for name in never}, "tokens.bin": 10,
                    "store/.gitignore": "*\n", "store/cache.bin": 10})  # store/: a directory kept only by its .gitignore
    selection = select_files(tmp_path)
    assert paths(selection.added) == {"tokens.bin"}
    assert paths(selection.entries) == {".gitignore", "train.py", "tokens.bin"}
    assert left_out_paths(selection) == {"store/cache.bin"}


def test_nothing_inside_an_ignored_directory_is_sent_by_the_rule_and_it_is_reported(tmp_path):
    make(tmp_path, {".gitignore": "data/\n", "train.py": "", "data/prepare.py": "", "data/train.bin": 1000,
                    "data/sub/val.bin": 500, "data/.venv/pyvenv.cfg": "", "data/.venv/lib/x.py": ""})
    selection = select_files(tmp_path)
    assert paths(selection.entries) == {".gitignore", "train.py"} and not selection.added
    assert selection.left_out == [LeftOut("data/prepare.py", 0, "data", True), LeftOut("data/sub/val.bin", 500, "data", True),
                                  LeftOut("data/train.bin", 1000, "data", True)]
    assert selection_lines(selection) == ["sync: left out by ignore rules: data/ 1.5 kB (3 files) --include 'data/**'"]


def test_offloadignore_wins_over_the_rule_at_any_level(tmp_path):
    make(tmp_path, {".gitignore": "*.bin\n", ".offloadignore": "big.bin\n*.tmp\n", "train.py": "",
                    "big.bin": 10, "small.bin": 10, "sub/.gitignore": "*.tmp\n", "sub/run.py": "", "sub/x.tmp": 1})
    selection = select_files(tmp_path)
    assert paths(selection.added) == {"small.bin"}  # sub/.gitignore decides sub/x.tmp, but .offloadignore says no
    assert not selection.left_out  # what .offloadignore leaves out is the user's word for offload: not reported


def test_the_budget_leaves_out_the_larger_files_the_same_way_every_time(tmp_path):
    make(tmp_path, {".gitignore": "*.bin\n", "prepare.py": "", "a.bin": 100, "b.bin": 200, "c.bin": 300})
    first = select_files(tmp_path, data_budget=350)
    assert paths(first.added) == {"a.bin", "b.bin"} and paths(first.over_budget) == {"c.bin"}
    assert "c.bin" not in paths(first.entries)
    (tmp_path / "a.bin").write_bytes(b"\1" * 100)  # contents and mtimes change, sizes do not: the same choice
    assert paths(select_files(tmp_path, data_budget=350).added) == {"a.bin", "b.bin"}
    assert selection_lines(first)[1] == ("sync: over the 350 B data budget, left out 1 file (300 B): c.bin (300 B); "
                                         "send with --include c.bin, or raise data_budget in offload.yaml")
    assert not select_files(tmp_path, data_budget=0).added
    assert paths(select_files(tmp_path, include=["c.bin"], data_budget=0).entries) >= {"c.bin"}


def test_offload_yaml_sets_the_budget_and_includes(tmp_path):
    make(tmp_path, {".gitignore": "*.bin\nout/\n", "prepare.py": "", "a.bin": 100, "b.bin": 2000,
                    "out/ckpt.pt": 5, "offload.yaml": "data_budget: 1kB\ninclude: ['out/**']\n"})
    selection = select_project(tmp_path)
    assert paths(selection.added) == {"a.bin"} and paths(selection.included) == {"out/ckpt.pt"}
    assert paths(select_project(tmp_path, ["b.bin"]).included) == {"out/ckpt.pt", "b.bin"}


@pytest.mark.parametrize("text, message", [
    ("data_budget: lots\n", "offload.yaml:1: data_budget must be a size in bytes or such as 500MB or 2GiB, not 'lots'"),
    ("setup: x\ndata_budget: -5\n", "offload.yaml:2: data_budget must be a size"),
    ("include: out/**\n", "offload.yaml:1: include must be a list of patterns"),
    ("include: ['!x']\n", "offload.yaml:1: include: '!x' cannot be sent"),
])
def test_bad_settings_name_the_file_and_line(text, message):
    with pytest.raises(OffloadError) as caught:
        parse(text, "offload.yaml")
    assert caught.value.message.startswith(message) and "\n" not in caught.value.message


@pytest.mark.parametrize("text, size", [("data_budget: 500MB\n", 500_000_000), ("data_budget: 2GiB\n", 2 * 1024**3),
                                        ("data_budget: 1.5 GB\n", 1_500_000_000), ("data_budget: 0\n", 0)])
def test_budget_sizes(text, size):
    assert parse(text, "offload.yaml").data_budget == size


def test_include_reaches_inside_ignored_directories_but_never_git_or_offload(tmp_path):
    make(tmp_path, {".gitignore": "out/\ncache/\n", "train.py": "", "out/run1/ckpt.pt": 10, "out/run1/log.txt": 1,
                    "cache/deep/er/tokens.bin": 3, ".git/HEAD": "ref", ".offload/runs/x/meta.json": "{}"})
    assert paths(select_files(tmp_path, include=["out/**"]).included) == {"out/run1/ckpt.pt", "out/run1/log.txt"}
    assert paths(select_files(tmp_path, include=["out/"]).included) == {"out/run1/ckpt.pt", "out/run1/log.txt"}
    assert paths(select_files(tmp_path, include=["*.pt"]).included) == {"out/run1/ckpt.pt"}
    assert paths(select_files(tmp_path, include=["tokens.bin"]).included) == {"cache/deep/er/tokens.bin"}
    assert paths(select_files(tmp_path, include=[str(tmp_path / "out/run1/ckpt.pt")]).included) == {"out/run1/ckpt.pt"}
    assert not select_files(tmp_path, include=[".git/**", "HEAD", ".offload/**", "meta.json"]).included


@pytest.mark.parametrize("pattern", ["!out/", "../other/x", "  ", "#x"])
def test_a_bad_include_is_a_one_line_error(tmp_path, pattern):
    with pytest.raises(OffloadError) as caught:
        select_files(tmp_path, include=[pattern])
    assert caught.value.hint and "\n" not in caught.value.message


def test_the_report_walk_is_bounded_and_says_so(tmp_path):
    make(tmp_path, {".gitignore": "logs/\n", "train.py": "", **{f"logs/{i:03}.txt": 1 for i in range(50)}})
    selection = select_files(tmp_path, report_limit=10)
    assert selection.left_out_capped and len(selection.left_out) == 10
    assert selection_lines(selection)[0].endswith("; and more (stopped looking after 20,000 entries in ignored directories)")
    assert not select_files(tmp_path).left_out_capped


def test_selection_time_for_ten_thousand_files(tmp_path):
    ten_thousand_files(tmp_path)
    start = time.perf_counter()
    base = scan_project(tmp_path)
    scanned = time.perf_counter()
    selection = select_files(tmp_path)
    selected = time.perf_counter()
    assert selection.entries == base
    print(f"\nscan_project {(scanned - start) * 1000:.0f} ms, select_files {(selected - scanned) * 1000:.0f} ms")


# --- end to end, against the real sshd ----------------------------------------------------------------------

def test_a_nanogpt_sync_sends_the_prepared_data_and_says_what_it_left_out(box, project):
    make(project, {".gitignore": (GITIGNORES / "nanoGPT.gitignore").read_text(), "train.py": "", "model.py": "",
                   "data/shakespeare_char/prepare.py": "", "data/shakespeare_char/input.txt": "First Citizen:\n",
                   "out-shakespeare-char/ckpt.pt": "weights", "__pycache__/model.cpython-311.pyc": "bytecode"})
    for name, content in (("train.bin", b"\1\0" * 500), ("val.bin", b"\2\0" * 50), ("meta.pkl", b"\x80\x04}")):
        (project / "data" / "shakespeare_char" / name).write_bytes(content)

    result = run_offload("sync", cwd=project)

    assert result.returncode == 0, result.stderr
    host_dir = host_project_dir(box["workdir"], project)
    for name in ("train.bin", "val.bin", "meta.pkl", "input.txt"):
        relpath = f"data/shakespeare_char/{name}"
        assert (host_dir / relpath).read_bytes() == (project / relpath).read_bytes()
    assert not (host_dir / "out-shakespeare-char" / "ckpt.pt").exists() and not (host_dir / "__pycache__").exists()
    lines = result.stderr.splitlines()
    assert ("sync: sending git-ignored files that sit beside synced ones: 4 files (1.1 kB): data/shakespeare_char/"
            "train.bin (1.0 kB), data/shakespeare_char/val.bin (100 B), data/shakespeare_char/input.txt (15 B) and 1 more") in lines
    assert "sync: left out by ignore rules: out-shakespeare-char/ 7 B (1 file) --include out-shakespeare-char/ckpt.pt" in lines

    again = run_offload("sync", "--include", "out-shakespeare-char/**", cwd=project)
    assert again.returncode == 0, again.stderr
    assert (host_dir / "out-shakespeare-char" / "ckpt.pt").read_text() == "weights"
    assert "sync: --include sends 1 file that ignore rules leave out (7 B)" in again.stderr.splitlines()


def test_sync_include_errors_are_one_line(box, project):
    result = run_offload("sync", "--include", "!out/", cwd=project)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "offload: error: include pattern '!out/' starts with '!' (hint: includes only add files; leave files out with .offloadignore)"]
