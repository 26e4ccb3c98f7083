"""The peak FLOP/s of one device for one precision: what an honest MFU divides by.

GPUs: a table of dense peaks (structured sparsity never counted), keyed by the exact name nvidia-smi prints.
fp32 is the non-tensor FP32 rate; tf32, bf16 and fp16 are tensor-core rates, bf16 and fp16 with FP32
accumulate, which is what PyTorch's matmuls use. On GeForce cards that accumulate runs at half the FP16-accumulate
rate NVIDIA also prints (Ampere, Ada, Blackwell alike), so the table holds the lower figure. Names match exactly:
"NVIDIA L4" is not "NVIDIA L40S", and a laptop GPU is a different card from the desktop one of the same number.

CPUs: peak = physical cores × max clock × FLOPs per cycle per core, and FLOPs per cycle = FMA units × lanes of
the precision per vector × 2 (an FMA is a multiply and an add). Lanes: 16 fp32 with AVX-512F, 8 with AVX2+FMA;
without FMA, one vector multiply and one vector add per cycle (8 lanes with AVX, else 4 with SSE). Two FMA units
are assumed unless the vendor and family say otherwise:
  - AMD Zen 4 (family 25 with AVX-512) runs each 512-bit op as two 256-bit halves: 32 fp32 FLOP/cycle, not 64;
    Zen 5 (family 26) has full 512-bit datapaths, except the mobile "Ryzen AI" parts, which keep 256-bit ones
    (A. J. Yee, "Zen5's AVX512 Teardown", numberworld.org, 2024; D. Huang's Strix Point measurements).
  - Skylake/Cascade Lake Xeon Silver and Bronze (family 6 model 85) have one 512-bit FMA unit: the second, on
    port 5, is only on Gold 61xx/5122 and Platinum (RPTU HPC "AVX how-to"; Intel ARK "# of AVX-512 FMA Units").
  Not handled, so counted as two units: Intel client AVX-512 cores (Ice/Tiger/Rocket Lake), Gold 51xx, Zen 1/Zen+
  (128-bit units), and AMX-FP16.
bf16: AMX (amx_bf16) does 1024 BF16 FLOP/cycle/core (Intel, "Accelerate AI Workloads with Intel AMX": 1024 BF16
ops per cycle per core on 4th Gen Xeon); AVX512_BF16's VDPBF16PS does two bf16 products per fp32 lane, twice the
fp32 rate; without either, bf16 math is done in fp32. fp16 is twice fp32 with AVX512-FP16, else the fp32 rate;
tf32 does not exist on CPUs: fp32 rate.
"""
from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
DTYPE_NAMES = {  # what users, torch and nanoGPT's --dtype call each precision
    "fp32": "fp32", "float32": "fp32", "float": "fp32", "f32": "fp32",
    "tf32": "tf32", "tensorfloat32": "tf32",
    "bf16": "bf16", "bfloat16": "bf16",
    "fp16": "fp16", "float16": "fp16", "half": "fp16", "f16": "fp16",
}
SET_PEAK_HINT = "set peak_tflops for this host in hosts.yaml"
MEANING = {
    "fp32": "FP32 (non-tensor)",
    "tf32": "TF32 tensor",
    "bf16": "BF16 tensor, FP32 accumulate",
    "fp16": "FP16 tensor, FP32 accumulate",
}
CLOCK_SOURCE = {
    "cpufreq": "cpufreq cpuinfo_max_freq",
    "lscpu": "lscpu 'CPU max MHz'",
    "cpuinfo": "/proc/cpuinfo 'cpu MHz', a current clock, not a rated maximum",
}
AMX_BF16_FLOP_PER_CYCLE = 1024  # Intel: 1024 BF16 ops/cycle/core (4th Gen Xeon); 16 cycles per 16x16x32 TDPBF16PS


@dataclass(frozen=True)
class Peak:
    tflops: float | None  # dense peak of ONE device for this precision; None when unknown
    source: str  # where the figure comes from (document + table), or why it is unknown


def normalize_dtype(text) -> str | None:
    """'float32', 'fp32', 'torch.float32' -> 'fp32'; likewise tf32, bf16, fp16 ('half'); None if not a precision."""
    if not isinstance(text, str):
        return None
    name = text.strip().lower()
    if name.startswith("torch."):
        name = name[len("torch."):]
    return DTYPE_NAMES.get(name)


# --- GPUs ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Card:
    names: tuple  # exactly as nvidia-smi prints them (older drivers print some without "NVIDIA ")
    fp32: float
    tf32: float | None
    bf16: float | None
    fp16: float | None
    source: str
    lacks: str = ""  # the card's name and architecture, for "no bf16 tensor cores on ..."


GA102_WP = "NVIDIA Ampere GA102 GPU Architecture whitepaper v2"
ADA_WP = "NVIDIA Ada GPU Architecture whitepaper v2.1, Appendix A"
RTX_BLACKWELL_WP = "NVIDIA RTX Blackwell GPU Architecture whitepaper, Table 3"
HALF_SPARSE = "; the datasheet prints tensor figures with sparsity, halved here"


def geforce(names: tuple, cores: int, boost_mhz: int, card: str) -> Card:
    """A GeForce card whose figures no whitepaper table gave us: 2 FLOP × CUDA cores × boost clock (NVIDIA's
    specifications), and the tensor rates in the ratio every GeForce Ampere/Ada/Blackwell whitepaper table shows:
    TF32 = the FP32 figure, FP16/BF16 with FP32 accumulate = twice it (RTX 3090 35.6/71, RTX 4090 82.6/165.2)."""
    fp32 = round(2 * cores * boost_mhz / 1e6, 1)
    return Card(names, fp32, fp32, round(4 * cores * boost_mhz / 1e6, 1), round(4 * cores * boost_mhz / 1e6, 1),
                f"derived: 2 × {cores} CUDA cores × {boost_mhz} MHz boost (NVIDIA's {card} specifications); tensor "
                "rates in the ratio of the GeForce whitepaper tables (TF32 = FP32; FP16/BF16 with FP32 accumulate "
                "= 2 × FP32)")


CARDS = (
    # GeForce Ampere
    geforce(("NVIDIA GeForce RTX 3060", "GeForce RTX 3060"), 3584, 1777, "GeForce RTX 3060"),
    geforce(("NVIDIA GeForce RTX 3070", "GeForce RTX 3070"), 5888, 1725, "GeForce RTX 3070"),
    geforce(("NVIDIA GeForce RTX 3080", "GeForce RTX 3080"), 8704, 1710, "GeForce RTX 3080 (10 GB)"),
    Card(("NVIDIA GeForce RTX 3090", "GeForce RTX 3090"), 35.6, 35.6, 71.2, 71.2,
         f"{RTX_BLACKWELL_WP} (RTX 3090 BF16 with FP32 accumulate 71.2/142.4; {GA102_WP}, Appendix A, prints 71/142) "
         "and GA102 Appendix A (FP32 35.6, TF32 35.6)"),
    geforce(("NVIDIA GeForce RTX 3090 Ti", "GeForce RTX 3090 Ti"), 10752, 1860, "GeForce RTX 3090 Ti"),
    # GeForce Ada
    geforce(("NVIDIA GeForce RTX 4060 Ti",), 4352, 2535, "GeForce RTX 4060 Ti (8 and 16 GB)"),
    geforce(("NVIDIA GeForce RTX 4070",), 5888, 2475, "GeForce RTX 4070"),
    geforce(("NVIDIA GeForce RTX 4070 Ti",), 7680, 2610, "GeForce RTX 4070 Ti"),
    geforce(("NVIDIA GeForce RTX 4070 Ti SUPER",), 8448, 2610, "GeForce RTX 4070 Ti SUPER"),
    geforce(("NVIDIA GeForce RTX 4080",), 9728, 2505, "GeForce RTX 4080 (16 GB)"),
    Card(("NVIDIA GeForce RTX 4090",), 82.6, 82.6, 165.2, 165.2,
         f"{ADA_WP}, Table 2 (FP32 82.6; FP16 and BF16 with FP32 accumulate 165.2/330.4; TF32 82.6/165.2)"),
    # GeForce Blackwell
    geforce(("NVIDIA GeForce RTX 5080",), 10752, 2617, "GeForce RTX 5080"),
    Card(("NVIDIA GeForce RTX 5090",), 104.8, 104.8, 209.5, 209.5,
         f"{RTX_BLACKWELL_WP} (BF16 with FP32 accumulate 209.5/419; FP32 104.8; TF32 104.8/209.5)"),
    # Workstation
    Card(("NVIDIA RTX A6000",), 38.7, 77.4, 154.8, 154.8,
         f"{GA102_WP}, Table 3 (RTX A6000: FP32 38.7; TF32 77.4/154.8; BF16 and FP16 with FP32 accumulate "
         "154.8/309.6)"),
    Card(("NVIDIA RTX 6000 Ada Generation",), 91.1, 182.1, 364.2, 364.2,
         "NVIDIA RTX 6000 Ada Generation datasheet (FP32 91.1) and NVIDIA RTX PRO Blackwell GPU Architecture "
         "whitepaper, Table 4 (RTX 6000 Ada BF16 with FP32 accumulate 364.2/728.5; TF32 182.1/364.2)"),
    # Data center
    Card(("NVIDIA A10",), 31.2, 62.5, 125.0, 125.0,
         "NVIDIA A10 Tensor Core GPU datasheet (FP32 31.2; TF32 62.5 | 125*; BFLOAT16 and FP16 125 | 250*)"),
    Card(("NVIDIA A10G",), 35.0, 35.0, 70.0, 70.0,
         "AWS/NVIDIA A10G datasheet (NVIDIA_AWS_A10G_DataSheet_FINAL_02_17_2022.pdf: FP32 35, TF32 35, FP16 70; as "
         "tabulated by Full Stack Deep Learning's cloud GPU page, the PDF itself not seen). The A10G is an AWS part "
         "with GeForce-rate tensor cores; third-party tables that derive FP32 from its clocks print 31.5"),
    Card(("NVIDIA A40",), 37.4, 74.8, 149.7, 149.7,
         "NVIDIA A40 datasheet (FP32 37.4; TF32 74.8 | 149.6*; BF16 and FP16 149.7 | 299.4*)"),
    Card(("NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-80GB", "NVIDIA A100-PCIE-40GB", "NVIDIA A100 80GB PCIe",
          "A100-SXM4-40GB", "A100-PCIE-40GB"), 19.5, 156.0, 312.0, 312.0,
         "NVIDIA A100 Tensor Core GPU datasheet, every form factor (FP32 19.5; TF32 156 | 312*; BFLOAT16 and FP16 "
         "312 | 624*)"),
    Card(("NVIDIA L4",), 30.3, 60.0, 121.0, 121.0,
         "NVIDIA L4 datasheet (FP32 30.3; TF32 120*, BFLOAT16 and FP16 242*" + HALF_SPARSE + ")"),
    Card(("NVIDIA L40S",), 91.6, 183.0, 362.05, 362.05,
         "NVIDIA L40S datasheet (FP32 91.6; TF32 183 | 366*; BF16 and FP16 362.05 | 733*)"),
    Card(("Tesla T4",), 8.1, None, None, 65.0,
         "NVIDIA T4 datasheet (single precision 8.1; mixed precision FP16/FP32 65)", "Tesla T4 (Turing)"),
    Card(("Tesla V100-SXM2-16GB", "Tesla V100-SXM2-32GB"), 15.7, None, None, 125.0,
         "NVIDIA Tesla V100 datasheet, SXM2 (single precision 15.7; tensor performance 125)", "Tesla V100 (Volta)"),
    Card(("Tesla V100-PCIE-16GB", "Tesla V100-PCIE-32GB"), 14.0, None, None, 112.0,
         "NVIDIA Tesla V100 datasheet, PCIe (single precision 14; tensor performance 112)", "Tesla V100 (Volta)"),
    Card(("NVIDIA H100 80GB HBM3",), 67.0, 494.5, 989.5, 989.5,
         "NVIDIA H100 datasheet, H100 SXM (FP32 67; TF32 989*, BFLOAT16 and FP16 1,979*" + HALF_SPARSE
         + "; the H100 whitepaper's exact figures are 66.9/494.7/989.4)"),
    Card(("NVIDIA H100 PCIe",), 51.0, 378.0, 756.5, 756.5,
         "NVIDIA H100 datasheet, H100 PCIe (FP32 51; TF32 756*, BFLOAT16 and FP16 1,513*" + HALF_SPARSE + ")"),
    Card(("NVIDIA H100 NVL",), 60.0, 417.5, 835.5, 835.5,
         "NVIDIA H100 datasheet, H100 NVL per GPU (FP32 60; TF32 835*, BFLOAT16 and FP16 1,671*" + HALF_SPARSE
         + "; the launch datasheet gave 134/1,979/3,958 for a pair of GPUs)"),
    Card(("NVIDIA H200",), 67.0, 494.5, 989.5, 989.5,
         "NVIDIA H200 datasheet, H200 SXM (FP32 67; TF32 989*, BFLOAT16 and FP16 1,979*" + HALF_SPARSE + ")"),
    Card(("NVIDIA H200 NVL",), 60.0, 417.5, 835.5, 835.5,
         "NVIDIA H200 datasheet, H200 NVL (FP32 60; TF32 835*, BFLOAT16 and FP16 1,671*" + HALF_SPARSE + ")"),
    Card(("NVIDIA B200",), 75.0, 1100.0, 2250.0, 2250.0,
         "NVIDIA HGX B200 specifications, per GPU (FP32 75 TFLOPS; TF32 2.2 PFLOPS*, FP16/BF16 4.5 PFLOPS*"
         + HALF_SPARSE + "; the B200 of a GB200 system runs faster: FP32 80 TFLOPS, TF32 2.5 and BF16 5 PFLOPS*)"),
)
GPU_TABLE = {name: card for card in CARDS for name in card.names}


def gpu_peak(name: str, dtype: str) -> Peak:
    """The dense peak of the GPU nvidia-smi calls `name` (matched exactly) for `dtype`."""
    precision = normalize_dtype(dtype)
    if precision is None:
        return Peak(None, f"unknown precision {dtype!r} (one of {', '.join(PRECISIONS)})")
    card = GPU_TABLE.get(name)
    if card is None:
        return Peak(None, f"unknown device '{name}'; {SET_PEAK_HINT}")
    tflops = getattr(card, precision)
    if tflops is None:
        return Peak(None, f"no {precision} tensor cores on {card.lacks}; {SET_PEAK_HINT} to measure against "
                          "the rate it does run at")
    return Peak(tflops, f"{name}: {tflops:g} TFLOPS dense {MEANING[precision]}; {card.source}")


# --- CPUs ---------------------------------------------------------------------------------------------------------

def fp32_datapath(cpu: dict) -> tuple:
    """(FMA units, fp32 lanes per unit, what that rests on) for one core; units 0 means no FMA at all."""
    flags = set(cpu.get("flags") or ())
    vendor, family, model = cpu.get("vendor") or "", cpu.get("family"), cpu.get("model") or ""
    if "avx512f" in flags:
        if vendor == "AuthenticAMD" and family == 25:
            return 2, 8, "AMD Zen 4 runs each 512-bit AVX-512 op on two 256-bit halves"
        if vendor == "AuthenticAMD" and family == 26:
            if "Ryzen AI" in model:
                return 2, 8, "mobile Zen 5 (Ryzen AI) runs AVX-512 on 256-bit datapaths"
            return 2, 16, "AVX-512 on Zen 5's full 512-bit datapaths"
        if vendor == "GenuineIntel" and cpu.get("model_number") == 85 and ("Silver" in model or "Bronze" in model):
            return 1, 16, "AVX-512; Xeon Silver/Bronze of this generation have one 512-bit FMA unit"
        return 2, 16, "AVX-512, 2 FMA units assumed"
    if "avx2" in flags and "fma" in flags:
        return 2, 8, "AVX2+FMA, 2 FMA units assumed"
    if "avx" in flags:
        return 0, 8, "AVX without AVX2+FMA: one 8-lane multiply and one 8-lane add per cycle assumed"
    return 0, 4, "no AVX flag: one 4-lane SSE multiply and one 4-lane add per cycle assumed"


def cpu_flops_per_cycle(cpu: dict, precision: str) -> tuple:
    """(FLOPs per cycle per core, how that number is made) for `precision` on this CPU."""
    units, lanes, basis = fp32_datapath(cpu)
    flags = set(cpu.get("flags") or ())
    if units:
        fp32, how = units * lanes * 2, f"{units} FMA unit{'s' if units > 1 else ''} × {lanes} fp32 lanes × 2, {basis}"
    else:
        fp32, how = lanes * 2, f"{lanes} fp32 lanes × (1 multiply + 1 add), {basis}"
    if precision == "bf16" and "amx_bf16" in flags:
        return AMX_BF16_FLOP_PER_CYCLE, "AMX-BF16: Intel's 1024 BF16 FLOP/cycle/core"
    if precision == "bf16" and "avx512_bf16" in flags:
        return 2 * fp32, f"AVX512_BF16 VDPBF16PS: 2 bf16 products per fp32 lane, 2 × ({how})"
    if precision == "fp16" and "avx512_fp16" in flags:
        return 2 * fp32, f"AVX512-FP16: twice the fp32 lanes, 2 × ({how})"
    if precision in ("bf16", "fp16"):
        return fp32, f"{precision} computed in fp32: {how}"
    if precision == "tf32":
        return fp32, f"no TF32 on CPUs, fp32 rate: {how}"
    return fp32, how


def cpu_peak(cpu: dict, dtype: str) -> Peak:
    """Physical cores × max clock × FLOPs per cycle per core, for a facts dict from remote_agent.facts.cpu_facts."""
    precision = normalize_dtype(dtype)
    if precision is None:
        return Peak(None, f"unknown precision {dtype!r} (one of {', '.join(PRECISIONS)})")
    flops, how = cpu_flops_per_cycle(cpu, precision)
    cores, mhz, model = cpu.get("physical_cores"), cpu.get("max_mhz"), cpu.get("model") or "this CPU"
    if not cores:
        return Peak(None, f"core count of {model} unknown; {SET_PEAK_HINT}")
    if not mhz:
        return Peak(None, f"max clock of {model} unknown (no cpufreq, lscpu 'CPU max MHz' or /proc/cpuinfo "
                          f"'cpu MHz'); it does {flops} FLOP/cycle/core ({how}); {SET_PEAK_HINT}")
    ghz = mhz / 1000
    clock = CLOCK_SOURCE.get(cpu.get("mhz_source"), "clock source not recorded")
    cores_text = f"{cores} core{'s' if cores != 1 else ''}"
    return Peak(cores * ghz * flops / 1000,
                f"{cores_text} × {ghz:.2f} GHz × {flops} FLOP/cycle ({how}); {model}, clock from {clock}")


# --- hosts.yaml ---------------------------------------------------------------------------------------------------

def override_peak(value, dtype) -> Peak | None:
    """hosts.yaml's `peak_tflops`: a number for every precision, or a mapping such as {bf16: 165, fp32: 82.6}.
    None when there is no override for this precision (the table then decides)."""
    if value is None:
        return None
    precision = normalize_dtype(dtype)
    if isinstance(value, dict):
        by_precision = {}
        for key, tflops in value.items():
            if normalize_dtype(key) is None or not positive(tflops):
                raise ValueError(f"peak_tflops: {key!r}: {tflops!r} is not a precision ({', '.join(PRECISIONS)}) "
                                 "with a number of TFLOPS above 0")
            by_precision[normalize_dtype(key)] = float(tflops)
        if precision not in by_precision:
            return None
        return Peak(by_precision[precision], f"peak_tflops.{precision} = {by_precision[precision]:g} in hosts.yaml")
    if not positive(value):
        raise ValueError(f"peak_tflops must be a number above 0 or a mapping such as {{bf16: 165, fp32: 82.6}}, "
                         f"not {value!r}")
    return Peak(float(value), f"peak_tflops = {value:g} in hosts.yaml (every precision)")


def positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
