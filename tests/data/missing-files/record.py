"""Records the real stderr of scripts that open a file that is not there (tests/test_diagnose.py reads them).

Run from the repository root with the project's venv: `.venv/bin/python tests/data/missing-files/record.py`.
Each script runs in a fresh project directory named like a synced project on a host
(/tmp/offload-record/workdir/proj-1a2b3c4d), as `python SCRIPT` from that directory, as a job would.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT_DIR = Path("/tmp/offload-record/workdir/proj-1a2b3c4d")  # where the job ran: the host's project dir

SCRIPTS = {
    "open.txt": "open('data/tinyshakespeare/input.txt').read()\n",
    "memmap.txt": "import numpy as np\nnp.memmap('data/x/train.bin', dtype=np.uint16, mode='r')\n",
    "pickle.txt": "import pickle\nwith open('data/shakespeare_char/meta.pkl', 'rb') as f:\n    meta = pickle.load(f)\n",
    "torch-load.txt": "import torch\ntorch.load('out/ckpt.pt', map_location='cpu')\n",
    "np-load.txt": "import numpy as np\nnp.load('data/tokens.npy')\n",
    "np-loadtxt.txt": "import numpy as np\nnp.loadtxt('data/labels.txt')\n",
    "absolute.txt": "import os\nopen(os.path.abspath('data/shakespeare_char/val.bin'), 'rb')\n",
    "nanogpt-train.txt": (
        "import os\nimport numpy as np\n"
        "dataset = 'shakespeare_char'\n"
        "data_dir = os.path.join('data', dataset)\n"
        "def get_batch(split):\n"
        "    if split == 'train':\n"
        "        data = np.memmap(os.path.join(data_dir, 'train.bin'), dtype=np.uint16, mode='r')\n"
        "    else:\n"
        "        data = np.memmap(os.path.join(data_dir, 'val.bin'), dtype=np.uint16, mode='r')\n"
        "    return data[:8]\n"
        "print('tokens per iteration will be: 16,384')\n"
        "X = get_batch('train')\n"
    ),
}


def main() -> None:
    for name, source in SCRIPTS.items():
        shutil.rmtree(PROJECT_DIR, ignore_errors=True)
        PROJECT_DIR.mkdir(parents=True)
        script = PROJECT_DIR / ("train.py" if name.startswith("nanogpt") else "job.py")
        script.write_text(source)
        done = subprocess.run([sys.executable, script.name], cwd=PROJECT_DIR, capture_output=True, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert done.returncode != 0, name
        (HERE / name).write_text(done.stdout + done.stderr)
        print(f"{name}: exit {done.returncode}")
    shutil.rmtree(PROJECT_DIR.parent.parent)


if __name__ == "__main__":
    main()
