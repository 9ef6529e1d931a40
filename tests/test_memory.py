"""KNN and Mahalanobis fit and score in chunks: under an address-space cap far below what the
unchunked computation would take, they still run, and agree with the plain formula."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Runs in a child: RLIMIT_AS counts virtual memory, and torch alone maps gigabytes of it, so the
# cap is the child's own size once everything is imported, warmed up and allocated, plus BUDGET.
CHILD = """
import json, resource, sys
import torch
torch.set_num_threads(1)
from oodbench.scoring import Features, Head, create_scorer, fit_and_score

BUDGET = 300 * 2**20
gen = torch.Generator().manual_seed(0)


def feats(n, d, k):
    return Features(torch.rand(n, d, generator=gen), torch.zeros(n, k), torch.arange(n) % k)


def vm_size():
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    return int(status["VmSize"].split()[0]) * 1024


knn_train, knn_query = feats(40000, 16, 10), feats(8000, 16, 10)
maha_train, maha_query = feats(20000, 256, 100), feats(20000, 256, 100)
knn = create_scorer("knn", k=50, chunk_size=512, bank_chunk_size=4096, backend="torch")
maha = create_scorer("mahalanobis", chunk_size=512)
small = feats(300, 16, 10)  # warm up: first calls allocate kernels and thread-local buffers
head = Head(torch.zeros(10, 16), torch.zeros(10))
for name in ("knn", "mahalanobis"):
    fit_and_score(create_scorer(name, **{"chunk_size": 64}), small, head, {"q": small})
cap = vm_size() + BUDGET
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
naive = {"knn": 8000 * 40000 * 4, "mahalanobis": 20000 * 100 * 256 * 8}  # bytes, unchunked
try:
    torch.empty(8000, 40000)
    sys.exit("the cap does not hold: a full distance matrix could be allocated")
except (RuntimeError, MemoryError):
    pass

out = fit_and_score(knn, knn_train, head, {"q": knn_query})["q"]
bank = torch.nn.functional.normalize(knn_train.features, dim=1)
q = torch.nn.functional.normalize(knn_query.features[:50], dim=1)
kth = (q @ bank.T).topk(50, dim=1).values[:, -1]
knn_err = float(abs(out[:50] - (-(2 - 2 * kth).clamp(min=0).sqrt()).numpy()).max())

head = Head(torch.zeros(100, 256), torch.zeros(100))
out = fit_and_score(maha, maha_train, head, {"q": maha_query})["q"]
f = maha_query.features[:20].double()
diff = f[:, None, :] - maha.means_[None]
direct = -torch.einsum("ncd,de,nce->nc", diff, maha.precision_, diff).amin(dim=1)
maha_err = float(abs(out[:20] - direct.numpy()).max() / abs(direct).max())
print(json.dumps({"cap_mb": BUDGET / 2**20, "naive_mb": {k: v / 2**20 for k, v in naive.items()},
                  "knn_err": knn_err, "maha_rel_err": maha_err}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="needs /proc/self/status and RLIMIT_AS")
def test_knn_and_mahalanobis_fit_and_score_under_a_memory_cap() -> None:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert min(result["naive_mb"].values()) > 4 * result["cap_mb"]
    assert result["knn_err"] < 1e-5
    assert result["maha_rel_err"] < 1e-9
