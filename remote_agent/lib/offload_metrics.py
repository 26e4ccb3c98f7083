"""Tell offload what each training step did, so it can report an honest MFU.

offload prints an MFU (model FLOPs utilisation) for every run: the model FLOPs the run did per second,
over the peak FLOP/s of the device it ran on. From a script's printed lines alone it can only guess (it
rescales nanoGPT's `mfu` figure, which nanoGPT measures against an A100 whatever the device). A script
that knows its own FLOPs can say so through this module, and offload then uses those figures instead.

Usage, in a training script (offload puts this module on the job's PYTHONPATH; the script still runs
without it):

    try:
        import offload_metrics
    except ImportError:
        offload_metrics = None

    flops_per_step = offload_metrics.count_step_flops(forward_backward, x, y) * offload_metrics.world_size()
    ...
    offload_metrics.log_step(step, flops_per_step, seconds, tokens=tokens_per_step, loss=loss, dtype='bf16')

The protocol
------------
When the environment variable OFFLOAD_METRICS holds a path, every call of `log_step` appends one line to
that file: a JSON object (UTF-8, no line breaks inside, `\\n` at the end, flushed at once), e.g.

    {"v": 1, "step": 120, "flops": 4821827584, "seconds": 0.0123, "tokens": 2048, "loss": 2.31, "dtype": "bf16"}

    v        int    1, the version of this protocol (readers accept lines without it)
    step     int    the training iteration this line describes
    flops    int    model FLOPs of this step, ALL RANKS TOGETHER: forward and backward of every micro-batch
                    (gradient accumulation included) on every process of the job; optimizer FLOPs excluded
    seconds  float  the step's wall time, as the script measures it (the interval between two steps' ends)
    tokens   int    optional: tokens processed in this step, all ranks together
    loss     float  optional: the training loss of this step (null, or absent, when not measured or not finite)
    dtype    str    optional: the precision of the step's matrix multiplications: "fp32", "tf32", "bf16" or
                    "fp16"; it decides which of the device's peaks the MFU is measured against

Only rank 0 writes (the RANK environment variable, as torchrun sets it; unset means 0), so `flops` and
`tokens` must be the whole job's: multiply a per-rank figure by `world_size()`, or pass `per_rank=True`
and `log_step` does it. Without OFFLOAD_METRICS, `log_step` does nothing, so a script may call it on every
step unconditionally. offload skips the first steps (warm-up, compilation) when it computes the MFU.

A script may write these lines itself, without this module, in any language; the format above is all
offload reads. This module needs only the standard library to import (torch is imported by
`count_step_flops` alone) and runs on Python 3.8 and later.
"""
import json
import math
import os
import sys

ENV_VAR = "OFFLOAD_METRICS"
VERSION = 1
DTYPES = ("fp32", "tf32", "bf16", "fp16")
_DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
_failed_paths = set()  # a path we could not write to is reported once, then left alone


def enabled():
    """Whether this process should record steps: OFFLOAD_METRICS is set and this is rank 0."""
    return bool(os.environ.get(ENV_VAR)) and rank() == 0


def rank():
    return int(os.environ.get("RANK", "0") or 0)


def world_size():
    """Processes in the job (WORLD_SIZE, as torchrun sets it; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def dtype_name(dtype):
    """'fp32', 'tf32', 'bf16' or 'fp16' from one of those, nanoGPT's names ('bfloat16') or a torch.dtype."""
    name = str(dtype)
    name = name[len("torch."):] if name.startswith("torch.") else name
    name = _DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (or a torch float dtype), got {dtype!r}")
    return name


def step_record(step, flops, seconds, tokens=None, loss=None, dtype=None):
    """The JSON object of one line of the protocol (checked, with the optional fields left out when None)."""
    if flops < 0 or seconds < 0:
        raise ValueError(f"flops and seconds must not be negative, got flops={flops}, seconds={seconds}")
    record = {"v": VERSION, "step": int(step), "flops": int(round(flops)), "seconds": float(seconds)}
    if tokens is not None:
        record["tokens"] = int(tokens)
    if loss is not None:
        loss = float(loss)
        record["loss"] = loss if math.isfinite(loss) else None  # JSON has no NaN
    if dtype is not None:
        record["dtype"] = dtype_name(dtype)
    return record


def log_step(step, flops, seconds, tokens=None, loss=None, dtype=None, per_rank=False):
    """Append one line for this step to $OFFLOAD_METRICS (rank 0 only; nothing without the variable).

    `flops` and `tokens` are the whole job's; with per_rank=True they are this process's and are
    multiplied by world_size(). `loss` may be a float or a one-element tensor (read with .item(), which
    waits for the GPU: pass None on steps where the script does not read the loss anyway).
    """
    if not enabled():
        return
    if per_rank:
        flops = flops * world_size()
        tokens = None if tokens is None else tokens * world_size()
    if loss is not None and hasattr(loss, "item"):
        loss = loss.item()
    line = json.dumps(step_record(step, flops, seconds, tokens, loss, dtype), allow_nan=False) + "\n"
    path = os.environ[ENV_VAR]
    try:
        with open(path, "a", encoding="utf-8") as f:  # one write of one line, in append mode
            f.write(line)
            f.flush()
    except OSError as exc:  # a metrics file must never stop a training run
        if path not in _failed_paths:
            _failed_paths.add(path)
            print(f"offload_metrics: cannot write {path}: {exc.strerror}; steps are not recorded",
                  file=sys.stderr, flush=True)


def count_step_flops(step_fn, *args, **kwargs):
    """Model FLOPs of one call of step_fn(*args, **kwargs), e.g. a forward and backward of one batch.

    Runs step_fn once (for real: gradients accumulate, and random numbers are drawn, as in any call)
    under torch.utils.flop_counter.FlopCounterMode and returns its total, for this process. It counts
    matrix multiplications (2·M·N·K for an (M×K)·(K×N) product; a Linear layer's backward is two more
    such products, one for the weight's gradient and one for the input's when the input needs one) and
    attention; it does not count elementwise work, normalisation, softmax or the optimizer, as PaLM's
    model FLOPs do not. Attention counts the whole T×T score matrix (a causal mask is not subtracted)
    and, in the backward, its four products but not flash attention's recomputation of the scores: model
    FLOPs, as PaLM's 12·L·H·Q·T term counts them. Activation checkpointing's recomputed forward is counted.
    Needs torch 2.1 or later.
    """
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        raise RuntimeError("count_step_flops needs torch 2.1 or later (torch.utils.flop_counter)") from None
    with FlopCounterMode(display=False, custom_mapping=_attention_formulas()) as counter:
        step_fn(*args, **kwargs)
    return int(counter.get_total_flops())


def _shape(tensor_or_shape):
    return tuple(getattr(tensor_or_shape, "shape", tensor_or_shape))


def _attention_forward_flops(query, key, value, *args, **kwargs):
    """Q·Kᵀ and P·V: 2·b·h·Tq·Tk·(dq + dv), whatever the kernel (flash, efficient, cuDNN, CPU)."""
    (b, h, t_q, d_q), t_k, d_v = _shape(query), _shape(key)[-2], _shape(value)[-1]
    return 2 * b * h * t_q * t_k * (d_q + d_v)


def _attention_backward_flops(grad_out, query, key, value, *args, **kwargs):
    """dV = Pᵀ·dO, dP = dO·Vᵀ, dQ = dS·K, dK = dSᵀ·Q: twice the forward."""
    return 2 * _attention_forward_flops(query, key, value)


def _attention_formulas():
    """FlopCounterMode's formulas for scaled_dot_product_attention's kernels, as model FLOPs.

    torch has none for the CPU kernel (it would count no attention at all on a CPU) and counts the
    scores' recomputation in the GPU kernels' backward; these replace both.
    """
    import torch

    forward = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
               "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")
    formulas = {}
    for name in forward:
        for op_name, formula in ((name, _attention_forward_flops), (name + "_backward", _attention_backward_flops)):
            try:
                formulas[getattr(torch.ops.aten, op_name)] = formula
            except (AttributeError, RuntimeError):  # older torch lacks some of these kernels
                pass
    return formulas
