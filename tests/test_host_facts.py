"""What a host is: nvidia-smi read from recorded real outputs, and `offload hosts check` against the real sshd.

There is no GPU here: the recordings in tests/data/nvidia-smi (sources in tests/data/README.md) stand in for one.
"""
from __future__ import annotations

import platform
import re
import stat
import sys
from pathlib import Path

import pytest

from conftest import register_host, run_offload
from offload.cli.hosts_check import COLUMNS, describe_gpus
from remote_agent import facts
from sshd_server import closed_port, generate_keypair

RECORDED = Path(__file__).parent / "data" / "nvidia-smi"


@pytest.fixture(autouse=True)
def no_outside_agent(monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def gpu(name, memory_mib, driver, compute_capability) -> dict:
    return {"name": name, "memory_mib": memory_mib, "driver": driver, "compute_capability": compute_capability}


A100_PCIE = gpu("NVIDIA A100 80GB PCIe", 81920, None, "8.0")

# file -> (the query it was recorded with, where the file has no header; the GPUs in it; what hosts check shows)
EXPECTED = {
    "rtx-4060-laptop.csv": (None, [gpu("NVIDIA GeForce RTX 4060 Laptop GPU", 8188, "580.173.02", "8.9")],
                            "NVIDIA GeForce RTX 4060 Laptop GPU (8 GiB)"),
    "rtx-3090-x2.csv": (None, [gpu("NVIDIA GeForce RTX 3090", 24576, "580.126.09", "8.6")] * 2,
                        "NVIDIA GeForce RTX 3090 (24 GiB), NVIDIA GeForce RTX 3090 (24 GiB)"),
    "titan-v-and-rtx-5880-ada.csv": (None, [gpu("NVIDIA TITAN V", None, "570.86.15", "7.0"),
                                            gpu("NVIDIA RTX 5880 Ada Generation", None, "570.86.15", "8.9")],
                                     "NVIDIA TITAN V (? GiB), NVIDIA RTX 5880 Ada Generation (? GiB)"),
    "h100-80gb-hbm3.csv": ("name,memory.total,driver_version", [gpu("NVIDIA H100 80GB HBM3", 81559, "580.173.02", None)],
                           "NVIDIA H100 80GB HBM3 (80 GiB)"),
    "tesla-t4.csv": (None, [gpu("Tesla T4", 15360, None, "7.5")], "Tesla T4 (15 GiB)"),
    "gtx-1660-super.csv": (None, [gpu("NVIDIA GeForce GTX 1660 SUPER", 6144, "580.173.02", "7.5")],
                           "NVIDIA GeForce GTX 1660 SUPER (6 GiB)"),
    "a100-80gb-x7.csv": (None, [A100_PCIE] * 4 + [gpu("NVIDIA A100-SXM4-80GB", 81920, None, "8.0")] + [A100_PCIE] * 2,
                         ", ".join(["NVIDIA A100 80GB PCIe (80 GiB)"] * 4 + ["NVIDIA A100-SXM4-80GB (80 GiB)"]
                                   + ["NVIDIA A100 80GB PCIe (80 GiB)"] * 2)),
    "rtx-4070-ti-super.csv": (None, [gpu("NVIDIA GeForce RTX 4070 Ti SUPER", 16376, "560.35.03", None)],
                              "NVIDIA GeForce RTX 4070 Ti SUPER (16 GiB)"),
}


def test_every_recording_has_an_expectation():
    assert sorted(p.name for p in RECORDED.glob("*.csv")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_nvidia_smi_output_is_read(name):
    query, gpus, _ = EXPECTED[name]
    text = (RECORDED / name).read_text()
    assert facts.parse_nvidia_smi_csv(text, *([query] if query else [])) == gpus


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hosts_check_names_each_gpu_and_its_memory(name):
    query, _, shown = EXPECTED[name]
    gpus = facts.parse_nvidia_smi_csv((RECORDED / name).read_text(), *([query] if query else []))
    assert describe_gpus({"gpus": gpus}) == shown


def test_the_noheader_nounits_form_offload_asks_for_is_read_the_same():
    """offload runs --format=csv,noheader,nounits: the same rows without the header line and the units."""
    with_header = (RECORDED / "rtx-4060-laptop.csv").read_text()
    bare = with_header.splitlines()[1].replace(" MiB", "") + "\n"
    assert facts.parse_nvidia_smi_csv(bare) == facts.parse_nvidia_smi_csv(with_header)


def test_noise_around_the_rows_is_skipped():
    text = "No devices were found\n\n" + (RECORDED / "rtx-3090-x2.csv").read_text() + "\n"
    assert len(facts.parse_nvidia_smi_csv(text)) == 2


def test_no_nvidia_gpus_and_no_cuda_is_cpu_only():
    assert describe_gpus({"gpus": None, "torch": {"devices": []}}) == "none (cpu)"
    assert describe_gpus({"gpus": [], "torch": {"devices": [{"name": "NVIDIA GeForce RTX 3090", "memory_mib": 24135}]}}) \
        == "NVIDIA GeForce RTX 3090 (24 GiB)"  # nvidia-smi said nothing, torch did


@pytest.fixture
def stand_in_nvidia_smi(tmp_path, monkeypatch):
    """An `nvidia-smi` on PATH that prints a recording; like drivers before 510, it rejects compute_cap."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    script.write_text('#!/bin/sh\n'
                      'case "$*" in *compute_cap*) echo \'Field "compute_cap" is not a valid field to query.\'; exit 2;; esac\n'
                      f'cat {RECORDED / "h100-80gb-hbm3.csv"}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return script


def test_an_old_driver_is_asked_again_without_compute_cap(stand_in_nvidia_smi):
    assert facts.nvidia_gpus() == [gpu("NVIDIA H100 80GB HBM3", 81559, "580.173.02", None)]


def test_no_nvidia_smi_means_no_nvidia_facts(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert facts.nvidia_gpus() is None


# --- `offload hosts check` against the real sshd -------------------------------------------------

def table_rows(stdout: str) -> dict:
    """{host name: {column: cell}} from the rich table `hosts check` prints; a cell too long for its
    column goes on in the next line, under an empty host cell, split where it had a space."""
    rows, last = {}, None
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) != len(COLUMNS):
            continue
        if cells[0]:
            last = rows[cells[0].split()[0]] = dict(zip(COLUMNS, cells))
        elif last is not None:
            for column, more in zip(COLUMNS, cells):
                last[column] = f"{last[column]} {more}".strip()
    return rows


def test_hosts_check_reports_each_host_and_fails_when_one_is_unhealthy(offload_home, sshd, tmp_path):
    register_host(offload_home, sshd, name="box", workdir="~/w")
    register_host(offload_home, sshd, name="down", port=closed_port())
    generate_keypair(tmp_path / "stranger")
    register_host(offload_home, sshd, name="locked", identity_file=str(tmp_path / "stranger"))

    result = run_offload("hosts", "check")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    rows = table_rows(result.stdout)
    assert sorted(rows) == ["box", "down", "locked"], result.stdout

    box = rows["box"]
    assert box["host"] == f"box ({sshd.user}@{sshd.host}:{sshd.port})"
    assert (box["reachable"], box["auth"], box["cuda"], box["gpus"]) == ("yes", "ok", "no", "none (cpu)")
    assert box["python"].startswith(f"{platform.python_version()} (") and box["python"].endswith(sys.executable)
    assert re.fullmatch(r"2\.\d+\.\d+.*", box["torch"]), box["torch"]
    assert re.fullmatch(r"\d+(\.\d)? [kMGT]?B in ~/w", box["free disk"]), box["free disk"]
    assert box["survives logout"] == "yes"  # no logind session under the test sshd (UsePAM no); see test_logout_survival

    assert rows["down"]["reachable"] == "no: connection refused"
    assert rows["locked"]["reachable"] == "yes" and rows["locked"]["auth"].startswith("failed: authentication")


def test_hosts_check_reports_a_host_it_cannot_even_try_and_goes_on(offload_home, tmp_path):
    port = closed_port()
    (offload_home.path / "hosts.yaml").write_text(
        f"hosts:\n  nokey:\n    hostname: 127.0.0.1\n    port: {port}\n    identity_file: {tmp_path / 'gone'}\n"
        f"  down:\n    hostname: 127.0.0.1\n    port: {port}\n")
    result = run_offload("hosts", "check")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    rows = table_rows(result.stdout)
    assert rows["nokey"]["auth"].startswith("failed: cannot read identity file")  # the path may be folded
    assert rows["nokey"]["auth"].endswith("for nokey: No such file or directory")
    assert rows["down"]["reachable"] == "no: connection refused"
