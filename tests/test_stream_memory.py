"""A 5,000-image folder is extracted under an address-space cap that loading it into memory
exceeds, and gives the in-memory path's features."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from oodbench.data import ImageArray, Preprocess, load_path
from oodbench.extract import forward_features
from oodbench.models import create_model
from tests.openood_fixture import build_image_folder

N, SIZE = 5_000, 72  # 78 MB as one uint8 array
BUDGET = 50 * 2**20  # the cap over the child's size once imported and warmed up
# images per batch: streamed in batches of 16, the extraction fits under a 20 MB budget (at
# 128, its activations alone need 50 MB); the array needs the budget and half as much again
BATCH = 16

# RLIMIT_AS counts virtual memory and torch maps gigabytes of it: the cap is the child's own
# size after imports and a warm-up pass, plus BUDGET. Forked data-loader workers would inherit
# the cap at the parent's size, so the child decodes in its own process (workers=0: the same
# streamed DataLoader path); tests/test_stream.py covers workers.
CHILD = """
import json, resource, sys
import numpy as np, torch
torch.set_num_threads(1)
from oodbench.data import Preprocess, load_path
from oodbench.extract import forward_features
from oodbench.models import create_model

folder, mode, out, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[5])


def status(key):
    lines = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    return int(lines[key].split()[0]) * 1024


torch.manual_seed(0)
model = create_model("resnet8", 4, 3, widths=(4, 4, 4))
pre = Preprocess(72, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
sample = load_path(folder, "big", stream=True)
small = sample.subset(np.arange(256), "test")
forward_features(model, small, pre, torch.device("cpu"), batch, workers=0)  # warm-up
cap = status("VmSize") + int(sys.argv[4])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
try:
    np.empty((len(sample), 72, 72, 3), np.uint8).fill(0)
    sys.exit("the cap does not hold: the whole set fits in memory")
except MemoryError:
    pass
if mode == "memory":
    try:
        load_path(folder, "big", stream=False)
    except MemoryError:
        print(json.dumps({"refused": True}))
        sys.exit(0)
    sys.exit("the in-memory path loaded the whole set under the cap")
feats = forward_features(model, sample, pre, torch.device("cpu"), batch, workers=0)
np.save(out, feats.features.numpy())
print(json.dumps({"n": len(feats.features), "cap_over_start": int(sys.argv[4]),
                  "peak_rss": status("VmHWM")}))
"""


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_image_folder(tmp_path_factory.mktemp("big") / "set", N, size=SIZE)


def _child(folder: Path, mode: str, out: Path) -> dict[str, object]:
    # one malloc arena (a thread's new arena reserves 64 MB of address space at random) and
    # large blocks always mmap-ed (glibc's dynamic threshold would move them to a heap that
    # fragments and grows): the address space follows what is live, run after run
    env = {**os.environ, "MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(folder), mode, str(out),
                           str(BUDGET), str(BATCH)], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parents[1], env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_streaming_fits_where_the_array_does_not(big_folder: Path, tmp_path: Path) -> None:
    assert _child(big_folder, "memory", tmp_path / "unused.npy") == {"refused": True}
    report = _child(big_folder, "stream", tmp_path / "streamed.npy")
    assert report["n"] == N
    streamed = np.load(tmp_path / "streamed.npy")
    memory = load_path(big_folder, "big", stream=False)
    assert isinstance(memory, ImageArray) and memory.images.nbytes > BUDGET
    torch.manual_seed(0)
    model = create_model("resnet8", 4, 3, widths=(4, 4, 4))
    pre = Preprocess(SIZE, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    every = np.arange(0, N, 10)  # a 500-image sample of the in-memory path
    want = forward_features(model, memory.subset(every, "test"), pre, torch.device("cpu"),
                            BATCH).features.numpy()
    np.testing.assert_allclose(streamed[every], want, atol=1e-6, rtol=0)
