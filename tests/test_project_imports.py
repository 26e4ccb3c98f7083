"""The project's own code imports on the host as it does on the laptop (its root leads the job's PYTHONPATH),
and a run that still dies of ModuleNotFoundError is told where the module is: in the project, installed on the
laptop only (with the `setup:` line that installs it on the host), or nowhere. Real runs through the real sshd."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import register_host, run_offload
from offload.runs.record import load_runs


def test_a_script_in_a_subdirectory_imports_the_projects_own_package_with_no_setup(offload_home, sshd, project):
    register_host(offload_home, sshd)
    (project / "mypkg").mkdir()
    (project / "mypkg" / "__init__.py").write_text("VALUE = 42\n")
    (project / "projects" / "x").mkdir(parents=True)
    (project / "projects" / "x" / "train.py").write_text(
        "import json, os, sys\nimport mypkg\n"
        "print(json.dumps({'value': mypkg.VALUE, 'python_path': os.environ['PYTHONPATH'].split(os.pathsep)}))\n")
    result = run_offload("run", "--no-fallback", "projects/x/train.py", cwd=project)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    project_dir = load_runs(project)[-1]["project_dir"]
    assert project_dir != str(project)  # it ran in the synced copy on the host, not here
    assert report["value"] == 42 and report["python_path"][0] == project_dir


def laptop_venv_with(tmp_path: Path, module: str, dist: str, version: str) -> Path:
    """A virtualenv of the laptop's with a distribution installed in it (its files and dist-info, as pip leaves
    them): the host's python (the test's own interpreter) has no such module."""
    venv = tmp_path / "laptop-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True, timeout=60).stdout.strip())
    (purelib / module).mkdir()
    (purelib / module / "__init__.py").write_text("GREETING = 'hi'\n")
    info = purelib / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(f"{module}\n")
    (info / "RECORD").write_text(f"{module}/__init__.py,,\n{info.name}/METADATA,,\n")
    return venv


def diagnosis_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if "the run needs module" in line]


def test_a_module_installed_only_on_the_laptop_is_named_with_its_setup_line(offload_home, sshd, project, tmp_path):
    register_host(offload_home, sshd)
    venv = laptop_venv_with(tmp_path, "greetlib", "greet-lib", "1.2.3")
    (project / "projects").mkdir()
    (project / "projects" / "train.py").write_text("import greetlib.words\n")
    result = run_offload("run", "projects/train.py", cwd=project, env={"VIRTUAL_ENV": str(venv)})
    assert result.returncode == 1
    assert "ModuleNotFoundError: No module named 'greetlib'" in result.stdout  # the host really cannot import it
    (line,) = diagnosis_lines(result.stderr)
    assert line == (f"offload: the run needs module greetlib, which is installed on the laptop (greet-lib==1.2.3, for "
                    f"{venv}/bin/python) but not on box; install it there with this line in offload.yaml: "
                    "`setup: $OFFLOAD_PYTHON -m pip install -q greet-lib==1.2.3`")


def test_a_module_in_the_project_but_off_the_path_says_how_to_install_the_project(offload_home, sshd, project):
    register_host(offload_home, sshd)
    (project / "src" / "mingpt").mkdir(parents=True)
    (project / "src" / "mingpt" / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text("[project]\nname = 'mingpt'\nversion = '0'\n")
    (project / "train.py").write_text("from mingpt.model import GPT\n")
    result = run_offload("run", "train.py", cwd=project)
    assert result.returncode == 1
    (line,) = diagnosis_lines(result.stderr)
    assert line == ("offload: the run needs module mingpt, which is in the project (src/mingpt) but not importable "
                    "from the project's root on box: install the project there, in offload.yaml: "
                    "`setup: $OFFLOAD_PYTHON -m pip install -q -e .`")


def test_a_module_missing_everywhere_says_so(offload_home, sshd, project):
    register_host(offload_home, sshd)
    (project / "train.py").write_text("import no_such_module_anywhere_13f\n")
    result = run_offload("run", "train.py", cwd=project)
    assert result.returncode == 1
    (line,) = diagnosis_lines(result.stderr)
    assert line == ("offload: the run needs module no_such_module_anywhere_13f, which is neither in the project nor "
                    "installed on the laptop or on box: check its name, or install it on box with a `setup:` line "
                    "in offload.yaml")


def test_a_module_of_the_project_left_out_of_the_sync_is_named_with_the_include(offload_home, sshd, project):
    register_host(offload_home, sshd)
    (project / "vendor" / "tinylib").mkdir(parents=True)
    (project / "vendor" / "tinylib" / "__init__.py").write_text("")
    (project / ".gitignore").write_text("vendor/\n")
    (project / "train.py").write_text("import sys\nsys.path.insert(0, 'vendor')\nimport tinylib\n")
    result = run_offload("run", "train.py", cwd=project)
    assert result.returncode == 1
    (line,) = diagnosis_lines(result.stderr)
    assert line == ("offload: the run needs module tinylib, which is in the project (vendor/tinylib) but was not sent "
                    "to box (an ignore rule left it out): send it with --include 'vendor/tinylib/**' "
                    "(or `include:` in offload.yaml)")
