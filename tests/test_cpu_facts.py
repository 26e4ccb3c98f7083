"""CPU facts and CPU peaks, from recorded real /proc/cpuinfo and `lscpu` outputs (sources in tests/data/README.md)
and from this machine's own, read live by cpu_facts()."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from offload.mfu.peaks import PRECISIONS, cpu_peak
from remote_agent import facts
from remote_agent.cpu import merge_cpu_facts, parse_cpuinfo, parse_lscpu

DATA = Path(__file__).parent / "data"
EPYC_FLAGS = ["avx", "avx2", "avx512_bf16", "avx512f", "avx_vnni", "fma"]
AMX_FLAGS = ["amx_bf16", "amx_tile", "avx", "avx2", "avx512_bf16", "avx512_fp16", "avx512f", "avx_vnni", "fma"]


def cpu(vendor, family, model_number, model, logical, physical, sockets, max_mhz, flags) -> dict:
    return {"model": model, "vendor": vendor, "family": family, "model_number": model_number,
            "logical_cores": logical, "physical_cores": physical, "sockets": sockets, "max_mhz": max_mhz,
            "flags": flags}


CPUINFO = {
    "epyc-family26-2vcpu.txt": cpu("AuthenticAMD", 26, 2, "AMD EPYC", 2, 2, 1, 2596.12, EPYC_FLAGS),
    "core-i3-4160t.txt": cpu("GenuineIntel", 6, 60, "Intel(R) Core(TM) i3-4160T CPU @ 3.10GHz", 4, 2, 1, 1171.67,
                             ["avx", "avx2", "fma"]),
    # archspec keeps only processor 0's block of this 96-core part: one CPU listed, so one core counted
    "xeon-6972p-cpu0.txt": cpu("GenuineIntel", 6, 173, "Intel(R) Xeon(R) 6972P", 1, 1, 1, 2400.0, AMX_FLAGS),
}
LSCPU = {
    "epyc-family26-2vcpu.txt": cpu("AuthenticAMD", 26, 2, "AMD EPYC", 2, 2, 1, None, EPYC_FLAGS),
    "core-i3-4160t.txt": cpu("GenuineIntel", 6, 60, "Intel(R) Core(TM) i3-4160T CPU @ 3.10GHz", 4, 2, 1, 3100.0,
                             ["avx", "avx2", "fma"]),
    "xeon-platinum-8573c-2vcpu.txt": cpu("GenuineIntel", 6, 207, "INTEL(R) XEON(R) PLATINUM 8573C", 2, 1, 1, 2300.0,
                                         AMX_FLAGS),
    "core-i5-3340m.txt": cpu("GenuineIntel", 6, 58, "Intel(R) Core(TM) i5-3340M CPU @ 2.70GHz", 4, 2, 1, 3400.0,
                             ["avx"]),  # recorded under a locale that prints 'CPU max MHz: 3400,0000'
    "epyc-9v74-4vcpu.txt": cpu("AuthenticAMD", 25, 17, "AMD EPYC 9V74 80-Core Processor", 4, 2, 1, None,
                               ["avx", "avx2", "avx512_bf16", "avx512f", "fma"]),
}


def cpuinfo(name: str) -> dict:
    return parse_cpuinfo((DATA / "cpuinfo" / name).read_text())


def lscpu(name: str) -> dict:
    return parse_lscpu((DATA / "lscpu" / name).read_text())


def test_every_recording_has_an_expectation():
    assert sorted(p.name for p in (DATA / "cpuinfo").iterdir()) == sorted(CPUINFO)
    assert sorted(p.name for p in (DATA / "lscpu").iterdir()) == sorted(LSCPU)


@pytest.mark.parametrize("name", sorted(CPUINFO))
def test_recorded_cpuinfo_is_read(name):
    assert cpuinfo(name) == CPUINFO[name]


@pytest.mark.parametrize("name", sorted(LSCPU))
def test_recorded_lscpu_is_read(name):
    assert lscpu(name) == LSCPU[name]


@pytest.mark.parametrize("name", ["epyc-family26-2vcpu.txt", "core-i3-4160t.txt"])
def test_cpuinfo_and_lscpu_of_one_machine_agree(name):
    from_cpuinfo, from_lscpu = cpuinfo(name), lscpu(name)
    for key in ("model", "vendor", "family", "model_number", "logical_cores", "physical_cores", "sockets", "flags"):
        assert from_cpuinfo[key] == from_lscpu[key], key


def merged(cpuinfo_name: str | None, lscpu_name: str | None, cpufreq_khz: int | None = None) -> dict:
    return merge_cpu_facts(cpuinfo(cpuinfo_name) if cpuinfo_name else {}, lscpu(lscpu_name) if lscpu_name else {},
                           cpufreq_khz, "x86_64", None)


def test_the_clock_comes_from_the_best_source_there_is():
    assert (merged("core-i3-4160t.txt", "core-i3-4160t.txt")["max_mhz"],
            merged("core-i3-4160t.txt", "core-i3-4160t.txt")["mhz_source"]) == (3100.0, "lscpu")
    # cpufreq's cpuinfo_max_freq (kHz) outranks both; lscpu's 'CPU max MHz' is read from it where it exists
    assert merged("core-i3-4160t.txt", "core-i3-4160t.txt", 3100000)["mhz_source"] == "cpufreq"
    here = merged("epyc-family26-2vcpu.txt", "epyc-family26-2vcpu.txt")  # no cpufreq, lscpu gives no maximum
    assert (here["max_mhz"], here["mhz_source"]) == (2596.12, "cpuinfo")
    assert merged(None, "epyc-9v74-4vcpu.txt")["mhz_source"] is None


def test_merged_facts_keep_what_hosts_check_and_peaks_read():
    facts_ = merged("core-i3-4160t.txt", "core-i3-4160t.txt")
    assert facts_ == {"model": "Intel(R) Core(TM) i3-4160T CPU @ 3.10GHz", "vendor": "GenuineIntel", "family": 6,
                      "model_number": 60, "logical_cores": 4, "physical_cores": 2, "sockets": 1, "max_mhz": 3100.0,
                      "mhz_source": "lscpu", "flags": ["avx", "avx2", "fma"], "arch": "x86_64"}


# --- peaks --------------------------------------------------------------------------------------------------------

def test_avx2_peak_is_two_fma_units_of_eight_fp32_lanes():
    facts_ = merged("core-i3-4160t.txt", "core-i3-4160t.txt")
    peak = cpu_peak(facts_, "fp32")
    assert peak.tflops == pytest.approx(2 * 3.1 * 32 / 1000)
    assert peak.source.startswith("2 cores × 3.10 GHz × 32 FLOP/cycle (2 FMA units × 8 fp32 lanes × 2, AVX2+FMA")
    assert "lscpu 'CPU max MHz'" in peak.source
    bf16 = cpu_peak(facts_, "bfloat16")  # no bf16 hardware: computed in fp32, at the fp32 rate
    assert bf16.tflops == peak.tflops and "bf16 computed in fp32" in bf16.source


def test_avx512_peak_of_this_machines_recording_is_64_fp32_and_128_bf16_flop_per_cycle():
    facts_ = merged("epyc-family26-2vcpu.txt", "epyc-family26-2vcpu.txt")
    fp32, bf16 = cpu_peak(facts_, "fp32"), cpu_peak(facts_, "bf16")
    assert fp32.tflops == pytest.approx(2 * 2.59612 * 64 / 1000)
    assert fp32.source.startswith("2 cores × 2.60 GHz × 64 FLOP/cycle (2 FMA units × 16 fp32 lanes × 2, AVX-512 on "
                                  "Zen 5's full 512-bit datapaths)")
    assert "/proc/cpuinfo 'cpu MHz', a current clock, not a rated maximum" in fp32.source
    assert bf16.tflops == pytest.approx(2 * fp32.tflops) and "VDPBF16PS" in bf16.source
    assert cpu_peak(facts_, "tf32").tflops == fp32.tflops == cpu_peak(facts_, "fp16").tflops


def test_amx_peak_is_intels_1024_bf16_flop_per_cycle_per_core():
    facts_ = merged(None, "xeon-platinum-8573c-2vcpu.txt")
    bf16, fp32, fp16 = (cpu_peak(facts_, precision) for precision in ("bf16", "fp32", "fp16"))
    assert bf16.tflops == pytest.approx(1 * 2.3 * 1024 / 1000)
    assert bf16.source.startswith("1 core × 2.30 GHz × 1024 FLOP/cycle (AMX-BF16")
    assert fp32.tflops == pytest.approx(1 * 2.3 * 64 / 1000)
    assert fp16.tflops == pytest.approx(2 * fp32.tflops) and "AVX512-FP16" in fp16.source
    granite_rapids = cpu_peak(merged("xeon-6972p-cpu0.txt", None), "bf16")  # one CPU listed, its 'cpu MHz' clock
    assert granite_rapids.tflops == pytest.approx(1 * 2.4 * 1024 / 1000)


def test_zen4_avx512_counts_as_256_bit_units_and_an_unknown_clock_gives_no_peak():
    peak = cpu_peak(merged(None, "epyc-9v74-4vcpu.txt"), "fp32")
    assert peak.tflops is None
    assert peak.source.startswith("max clock of AMD EPYC 9V74 80-Core Processor unknown")
    assert "it does 32 FLOP/cycle/core (2 FMA units × 8 fp32 lanes × 2, AMD Zen 4 runs each 512-bit" in peak.source
    assert peak.source.endswith("set peak_tflops for this host in hosts.yaml")


def test_a_core_without_fma_does_one_multiply_and_one_add_per_cycle():
    peak = cpu_peak(merged(None, "core-i5-3340m.txt"), "fp32")
    assert peak.tflops == pytest.approx(2 * 3.4 * 16 / 1000)
    assert "8 fp32 lanes × (1 multiply + 1 add), AVX without AVX2+FMA" in peak.source


def test_an_unknown_precision_gives_no_cpu_peak():
    assert cpu_peak(merged("core-i3-4160t.txt", "core-i3-4160t.txt"), "int8").tflops is None


# --- this machine, live -------------------------------------------------------------------------------------------

def test_cpu_facts_here_agree_with_the_live_sources():
    here = facts.cpu_facts()
    live = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    for key in ("model", "vendor", "family", "model_number", "flags"):
        assert here[key] == live[key], key
    assert here["physical_cores"] == live["physical_cores"]
    assert here["max_mhz"] and here["mhz_source"] in ("cpufreq", "lscpu", "cpuinfo")
    assert cpu_peak(here, "fp32").tflops > 0


def test_cpu_facts_without_lscpu_still_read_cpuinfo(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no lscpu anywhere on PATH
    here = facts.cpu_facts()
    assert here["model"] == parse_cpuinfo(Path("/proc/cpuinfo").read_text())["model"]
    assert here["mhz_source"] in ("cpufreq", "cpuinfo")


def test_device_facts_are_the_gpus_the_cpu_and_whether_a_run_survives_logout():
    device = facts.device_facts()
    assert sorted(device) == ["compute_apps", "cpu", "gpus", "logout_survival"]
    assert device["logout_survival"] == {"plan": "fine", "message": None}  # no logind here (see test_logout_survival)
    assert device["gpus"] == facts.nvidia_gpus()
    cpu_now = facts.cpu_facts()
    assert {k: v for k, v in device["cpu"].items() if k != "max_mhz"} == \
           {k: v for k, v in cpu_now.items() if k != "max_mhz"}  # 'cpu MHz' is a current clock: it moves


def test_facts_stays_python_38_and_standard_library_only():
    """remote_agent runs on the host, under whatever Python 3.8+ it has, with nothing installed."""
    source = Path(facts.__file__).read_text()
    tree = ast.parse(source, feature_version=(3, 8))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported - set(sys.stdlib_module_names)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_precision_has_a_cpu_peak_here(precision):
    assert cpu_peak(facts.cpu_facts(), precision).tflops > 0
