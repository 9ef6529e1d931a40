"""The torch CPU thread count of a job, part of its resources.

CPU kernels split their reductions across threads, so a training's weights (and, in
principle, extracted features) depend on how many threads computed them. Every train and
eval, on every executor and command, runs with the count its benchmark's resources give
(:attr:`oodbench.config.JobResources.threads`), not the machine's core count, and gives the
process its own count back afterwards. Inter-op threads are left as torch sets them: eager
kernels never use that pool, so they do not change results.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from oodbench.config import JobResources


@contextmanager
def job_threads(resources: JobResources) -> Iterator[int]:
    """Run the block with ``resources``' torch threads (yielded), then restore the count."""
    before = torch.get_num_threads()
    torch.set_num_threads(resources.threads)
    try:
        yield resources.threads
    finally:
        torch.set_num_threads(before)
