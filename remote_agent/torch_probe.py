"""Print one JSON line with what torch sees: `python -m remote_agent.torch_probe`."""
import json

try:
    import torch
except Exception as exc:  # ImportError, or a broken install raising anything at import
    print(json.dumps({"error": f"import torch failed: {exc}"}))
else:
    devices = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            devices.append({"name": props.name, "memory_mib": props.total_memory // (1 << 20),
                            "compute_capability": f"{props.major}.{props.minor}"})
    print(json.dumps({"version": torch.__version__, "cuda_available": torch.cuda.is_available(),
                      "cuda_version": torch.version.cuda, "devices": devices}))
