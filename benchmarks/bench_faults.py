"""Kills and concurrent writers against every kind of output (issue 25).

Each writer runs in a child process that replaces an existing output (``overwrite=True``)
and is killed with SIGKILL after a random delay of 0-1.5 s; a one-second "slow disk" is
injected just before the final rename, so that kills and second writers meet writes in
progress. After every kill the output must read back
whole, as the old version or the new one; then one more write in this process must succeed
and leave no debris (no lock, no ``.partial``/``.blocks`` temporaries, no ``.old`` folder).
Concurrent pairs start two writers of one output together: one must be refused.

Run:  python benchmarks/bench_faults.py [--kills 20] [--pairs 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = """
import sys
import time
import numpy as np
import dask.array, tifffile, zarr  # imported before "writing", so a kill lands in the write
import sc_noise2self.io as io
from sc_noise2self.image import files

# A slow disk: one second inside the claimed write, just before the final rename, so that
# kills and a second writer meet a write in progress.
mode, replace = io._mode_for, io.replace_folder
io._mode_for = lambda path: (time.sleep(1.0), mode(path))[1]
io.replace_folder = lambda built, target: (time.sleep(1.0), replace(built, target))[1]
kind, target, value = sys.argv[1], sys.argv[2], float(sys.argv[3])
if kind == "h5ad":
    import anndata as ad
    from sc_noise2self.io import write_h5ad
    block = np.full((1500, 1000), value, dtype=np.float32)
    data = ad.AnnData(block, layers={name: block for name in "abc"})
    print("writing", flush=True)
    write_h5ad(data, target, overwrite=True)
elif kind == "report":
    from sc_noise2self.io import atomic_path
    print("writing", flush=True)
    with atomic_path(target, overwrite=True) as temporary:
        with open(temporary, "w") as out:
            for _ in range(200_000):
                out.write(f"{value}\\n")
else:
    data = np.full((12, 512, 512), value, dtype=np.float32)
    print("writing", flush=True)
    files.write(target, data, axes="TYX", overwrite=True)
print("done", flush=True)
"""

KINDS = {"h5ad": "out.h5ad", "OME-Zarr": "out.ome.zarr", "TIFF": "out.tif",
         "report (atomic_path: models, figures)": "out.json"}


def child(kind: str, target: Path, value: float) -> subprocess.Popen:
    name = {"h5ad": "h5ad", "report (atomic_path: models, figures)": "report"}.get(kind, "image")
    return subprocess.Popen([sys.executable, "-c", CHILD, name, str(target), str(value)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def value_of(kind: str, target: Path) -> float:
    """The constant the output holds (raises if it cannot be read whole)."""
    if kind == "h5ad":
        import anndata as ad

        data = ad.read_h5ad(target)
        values = {float(np.asarray(data.X).min()), float(np.asarray(data.X).max())}
    elif kind.startswith("report"):
        lines = target.read_text().split()
        if len(lines) != 200_000:
            raise ValueError(f"{len(lines)} lines")
        values = set(map(float, set(lines)))
    else:
        from sc_noise2self.image import files

        values = {float(np.min(files.read(target).data)), float(np.max(files.read(target).data))}
    if len(values) != 1:
        raise ValueError(f"mixed values {values}")
    return values.pop()


def debris(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def write_now(kind: str, target: Path, value: float) -> None:
    process = child(kind, target, value)
    process.communicate(timeout=300)
    if process.returncode != 0:
        raise RuntimeError(f"the writer failed: {process.returncode}")


def kills(kind: str, n: int, rng) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / KINDS[kind]
        write_now(kind, target, 1.0)
        old_kept = new_kept = broken = left = after_rerun = 0
        for attempt in range(n):
            process = child(kind, target, 2.0 + attempt)
            process.stdout.readline()
            time.sleep(rng.uniform(0.0, 1.5))
            process.kill()
            process.communicate(timeout=60)
            try:
                found = value_of(kind, target)
                old_kept += found < 2.0 + attempt
                new_kept += found == 2.0 + attempt
            except Exception:
                broken += 1
            left += bool(debris(Path(folder)))
            write_now(kind, target, 1.0)  # the rerun, which must sweep what the kill left
            after_rerun += bool(debris(Path(folder)))
        return {"old": old_kept, "new": new_kept, "broken": broken, "debris after kill": left,
                "debris after rerun": after_rerun}


def pairs(kind: str, n: int) -> dict:
    refused = both = 0
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / KINDS[kind]
        for attempt in range(n):
            first, second = child(kind, target, 10.0 + attempt), child(kind, target, 50.0 + attempt)
            outs = [p.communicate(timeout=300) for p in (first, second)]
            codes = [first.returncode, second.returncode]
            refused += sum("being written by another run" in err for _, err in outs)
            both += codes == [0, 0]
        whole = value_of(kind, target)
    return {"refused": refused, "both succeeded": both, "last output whole": np.isfinite(whole)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"load {os.getloadavg()}")
    print("| output | kills | old kept | new kept | unreadable | debris right after a kill | "
          "debris after the rerun | concurrent pairs | second writer refused | both wrote |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind in KINDS:
        k = kills(kind, args.kills, rng)
        p = pairs(kind, args.pairs)
        print(f"| {kind} | {args.kills} | {k['old']} | {k['new']} | {k['broken']} | "
              f"{k['debris after kill']} | {k['debris after rerun']} | {args.pairs} | "
              f"{p['refused']} | {p['both succeeded']} |", flush=True)
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
