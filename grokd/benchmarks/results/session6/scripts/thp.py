import mmap
import statistics
import time

import torch

torch.set_num_threads(2)


def buf(nbytes, huge):
    mm = mmap.mmap(-1, nbytes + (2 << 20), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if huge:
        mm.madvise(mmap.MADV_HUGEPAGE)
    t = torch.frombuffer(mm, dtype=torch.uint8)
    t.fill_(0)
    print(
        "huge" if huge else "4k",
        open("/proc/meminfo").read().split("AnonHugePages:")[1].split("\n")[0].strip(),
    )
    return mm, t


n = 256 << 20
res = {}
for huge in (False, True, False, True):
    mm, t = buf(n, huge)
    x = t[:n].view(torch.float32)
    ts = []
    for _ in range(15):
        t0 = time.perf_counter()
        x.sum()
        ts.append(time.perf_counter() - t0)
    res.setdefault(huge, []).append(n / statistics.median(ts) / 1e9)
    del x, t
print({k: [round(v, 1) for v in vs] for k, vs in res.items()}, "GB/s")
