"""Peak FLOP/s lookups: GPUs by the exact names in recorded real nvidia-smi outputs, hosts.yaml overrides, dtypes.

The recordings in tests/data/nvidia-smi (sources in tests/data/README.md) stand in for GPUs this machine lacks.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from offload.mfu.peaks import CARDS, GPU_TABLE, PRECISIONS, Peak, gpu_peak, normalize_dtype, override_peak
from remote_agent.facts import parse_nvidia_smi_csv

RECORDED = Path(__file__).parent / "data" / "nvidia-smi"
HEADERLESS_QUERY = {"h100-80gb-hbm3.csv": "name,memory.total,driver_version"}  # recorded with csv,noheader

# name as recorded -> (fp32, tf32, bf16, fp16) dense TFLOPS, or None for a device the table must not know
EXPECTED = {
    "NVIDIA GeForce RTX 4060 Laptop GPU": None,  # a laptop GPU is not the desktop RTX 4060 (and that is not listed)
    "NVIDIA GeForce RTX 3090": (35.6, 35.6, 71.2, 71.2),
    "NVIDIA TITAN V": None,
    "NVIDIA RTX 5880 Ada Generation": None,
    "NVIDIA H100 80GB HBM3": (67.0, 494.5, 989.5, 989.5),
    "Tesla T4": (8.1, None, None, 65.0),
    "NVIDIA GeForce GTX 1660 SUPER": None,
    "NVIDIA A100 80GB PCIe": (19.5, 156.0, 312.0, 312.0),
    "NVIDIA A100-SXM4-80GB": (19.5, 156.0, 312.0, 312.0),
    "NVIDIA GeForce RTX 4070 Ti SUPER": (44.1, 44.1, 88.2, 88.2),
}


def recorded_names() -> list:
    names = []
    for path in sorted(RECORDED.glob("*.csv")):
        query = HEADERLESS_QUERY.get(path.name)
        names += [gpu["name"] for gpu in parse_nvidia_smi_csv(path.read_text(), *([query] if query else []))]
    return names


def test_every_recorded_gpu_has_an_expectation():
    assert sorted(set(recorded_names())) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("precision", PRECISIONS)
def test_recorded_gpu_names_give_the_tables_dense_peak(name, precision):
    peak = gpu_peak(name, precision)
    if EXPECTED[name] is None:
        assert peak == Peak(None, f"unknown device '{name}'; set peak_tflops for this host in hosts.yaml")
        return
    expected = EXPECTED[name][PRECISIONS.index(precision)]
    assert peak.tflops == expected
    if expected is None:
        assert peak.source.startswith(f"no {precision} tensor cores on Tesla T4 (Turing); set peak_tflops")
    else:
        assert peak.source.startswith(f"{name}: {expected:g} TFLOPS dense ")
        assert "datasheet" in peak.source or "whitepaper" in peak.source


def test_a_recorded_h100_is_not_measured_against_its_sparsity_figure():
    """The H100 datasheet prints 1,979 TFLOPS bf16 *with sparsity*: half of it is the dense peak."""
    assert gpu_peak("NVIDIA H100 80GB HBM3", "bfloat16").tflops == 1979 / 2


# The cards the table must know, under the names nvidia-smi prints for them.
REQUIRED = {
    "NVIDIA GeForce RTX 3060": 25.5, "NVIDIA GeForce RTX 3070": 40.6, "NVIDIA GeForce RTX 3080": 59.5,
    "NVIDIA GeForce RTX 3090": 71.2, "NVIDIA GeForce RTX 3090 Ti": 80.0,
    "NVIDIA GeForce RTX 4060 Ti": 44.1, "NVIDIA GeForce RTX 4070": 58.3, "NVIDIA GeForce RTX 4070 Ti": 80.2,
    "NVIDIA GeForce RTX 4070 Ti SUPER": 88.2, "NVIDIA GeForce RTX 4080": 97.5, "NVIDIA GeForce RTX 4090": 165.2,
    "NVIDIA GeForce RTX 5080": 112.6, "NVIDIA GeForce RTX 5090": 209.5,
    "NVIDIA A10": 125.0, "NVIDIA A10G": 70.0, "NVIDIA A40": 149.7,
    "NVIDIA A100-SXM4-40GB": 312.0, "NVIDIA A100-SXM4-80GB": 312.0, "NVIDIA A100-PCIE-40GB": 312.0,
    "NVIDIA A100 80GB PCIe": 312.0, "NVIDIA L4": 121.0, "NVIDIA L40S": 362.05, "Tesla T4": None,
    "Tesla V100-SXM2-16GB": None, "Tesla V100-SXM2-32GB": None, "Tesla V100-PCIE-16GB": None,
    "Tesla V100-PCIE-32GB": None, "NVIDIA H100 80GB HBM3": 989.5, "NVIDIA H100 PCIe": 756.5,
    "NVIDIA H100 NVL": 835.5, "NVIDIA H200": 989.5, "NVIDIA B200": 2250.0, "NVIDIA RTX A6000": 154.8,
    "NVIDIA RTX 6000 Ada Generation": 364.2,
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_each_required_card_has_its_bf16_peak(name):
    assert gpu_peak(name, "bf16").tflops == REQUIRED[name]
    assert gpu_peak(name, "fp32").tflops > 0


@pytest.mark.parametrize("name,fp16", [("Tesla T4", 65.0), ("Tesla V100-SXM2-16GB", 125.0),
                                       ("Tesla V100-PCIE-32GB", 112.0)])
def test_turing_and_volta_have_fp16_tensor_cores_and_no_bf16_or_tf32(name, fp16):
    assert gpu_peak(name, "fp16").tflops == fp16
    for precision in ("bf16", "tf32"):
        peak = gpu_peak(name, precision)
        assert peak.tflops is None
        assert peak.source.startswith(f"no {precision} tensor cores on Tesla ")
        assert "set peak_tflops" in peak.source


@pytest.mark.parametrize("name,known_as", [
    ("NVIDIA L4", 121.0), ("NVIDIA L40S", 362.05), ("NVIDIA L40", None),
    ("NVIDIA GeForce RTX 4070", 58.3), ("NVIDIA GeForce RTX 4070 Ti", 80.2),
    ("NVIDIA GeForce RTX 4070 Ti SUPER", 88.2), ("NVIDIA GeForce RTX 4070 SUPER", None),
    ("NVIDIA GeForce RTX 4090", 165.2), ("NVIDIA GeForce RTX 4090 D", None),
    ("NVIDIA GeForce RTX 4090 Laptop GPU", None), ("NVIDIA GeForce RTX 3080 Ti", None),
    ("NVIDIA H100", None), ("NVIDIA H100 PCIe", 756.5), ("NVIDIA H100 NVL", 835.5), ("NVIDIA H200 NVL", 835.5),
    ("RTX 4090", None), ("nvidia geforce rtx 4090", None), ("NVIDIA GeForce RTX 4090 ", None),
    ("GeForce RTX 3090", 71.2), ("A100-SXM4-40GB", 312.0),  # what drivers before the "NVIDIA " prefix printed
])
def test_names_match_exactly_never_by_prefix_or_substring(name, known_as):
    assert gpu_peak(name, "bf16").tflops == known_as


def test_no_name_in_the_table_is_found_by_a_longer_or_shorter_name():
    for name in GPU_TABLE:
        for other in (name + " SUPER", name + " Laptop GPU", name + "X", name[:-1], "NVIDIA " + name):
            if other not in GPU_TABLE:
                assert gpu_peak(other, "fp32").tflops is None, other


def test_geforce_tensor_figures_are_the_fp32_accumulate_ones():
    """GeForce cards accumulate in FP32 at half their FP16-accumulate rate: bf16/fp16 = 2 x fp32, tf32 = fp32."""
    geforce = [card for card in CARDS if any("GeForce" in name for name in card.names)]
    assert len(geforce) == 13
    for card in geforce:
        assert card.tf32 == card.fp32, card.names
        assert card.bf16 == card.fp16 and abs(card.bf16 - 2 * card.fp32) <= 0.15, card.names


def test_every_card_cites_where_its_figures_come_from():
    for card in CARDS:
        assert any(word in card.source for word in ("datasheet", "whitepaper", "specifications")), card.names
        assert all(card.names) and len(set(card.names)) == len(card.names)
    assert len(GPU_TABLE) == sum(len(card.names) for card in CARDS)  # no name in two cards


def test_an_unknown_precision_is_said_to_be_one():
    peak = gpu_peak("NVIDIA GeForce RTX 4090", "int8")
    assert peak == Peak(None, "unknown precision 'int8' (one of fp32, tf32, bf16, fp16)")


@pytest.mark.parametrize("text,precision", [
    ("float32", "fp32"), ("fp32", "fp32"), ("torch.float32", "fp32"), ("FP32", "fp32"), (" float32 ", "fp32"),
    ("float", "fp32"), ("tf32", "tf32"), ("bfloat16", "bf16"), ("bf16", "bf16"), ("torch.bfloat16", "bf16"),
    ("float16", "fp16"), ("half", "fp16"), ("fp16", "fp16"), ("torch.float16", "fp16"), ("torch.half", "fp16"),
    ("float64", None), ("int8", None), ("", None), (None, None), (16, None), ("torch.", None),
])
def test_normalize_dtype(text, precision):
    assert normalize_dtype(text) == precision


def test_a_number_overrides_every_precision():
    for precision in PRECISIONS:
        assert override_peak(165, precision) == Peak(165.0, "peak_tflops = 165 in hosts.yaml (every precision)")
    assert override_peak(82.6, "torch.float32").tflops == 82.6


def test_a_mapping_overrides_only_the_precisions_it_names():
    value = {"bf16": 165, "fp32": 82.6}
    assert override_peak(value, "bfloat16") == Peak(165.0, "peak_tflops.bf16 = 165 in hosts.yaml")
    assert override_peak(value, "fp32") == Peak(82.6, "peak_tflops.fp32 = 82.6 in hosts.yaml")
    assert override_peak(value, "fp16") is None
    assert override_peak(value, "tf32") is None
    assert override_peak({"bfloat16": 80}, "bf16").tflops == 80.0


def test_no_override_is_none():
    assert override_peak(None, "bf16") is None


@pytest.mark.parametrize("value", [0, -1, True, "165", [165], {"int8": 5}, {"bf16": 0}, {"bf16": "165"}])
def test_a_bad_override_says_what_is_expected(value):
    with pytest.raises(ValueError, match="peak_tflops"):
        override_peak(value, "bf16")
