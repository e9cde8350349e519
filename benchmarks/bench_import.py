"""import: ``python -c "import headwater"`` against ``python -c "pass"``, fresh processes.

Also checks what the import pulls in: nothing of the CLI, sqlite3, pluggy's entry-point
scan, pydantic or contrib may be imported by ``import headwater``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

from harness import NO_LOGGING, PYTHON, Row, child_env, emit, main, median, time_process

#: Modules ``import headwater`` must not import (DESIGN: keep the import light).
FORBIDDEN = ("headwater.cli", "headwater.plugins", "sqlite3", "pluggy", "pydantic", "headwater_dask",
             "importlib.metadata", "click", "typer", "cloudpickle", "anyio")


def child(args: list[str]) -> None:
    import headwater  # noqa: F401

    emit({"modules": sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))})


def measure(args):
    env = child_env(tempfile.mkdtemp(prefix="hw-bench-"))
    reps = max(args.repeat * 3, 11)
    bare, imp = [], []
    for _ in range(2):  # warm the file cache
        time_process([PYTHON, "-c", "import headwater"], env)
    for _ in range(reps):  # interleaved, so drift hits both alike
        bare.append(time_process([PYTHON, "-c", "pass"], env))
        imp.append(time_process([PYTHON, "-c", "import headwater"], env))
    out = subprocess.run([PYTHON, __file__, "--child"], env=env, capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])["modules"]
    b, i = median(bare), median(imp)
    rows = [
        Row("whole process", i, "s", b, "python -c pass", "<= 150 ms and <= 5x",
            i <= 0.150 and i / b <= 5, imp, note=NO_LOGGING),
        Row("import cost alone", i - b, "s", note="headwater's process minus bare start-up"),
        Row("forbidden modules loaded", len(loaded), "", budget="0", ok=not loaded,
            note=", ".join(loaded) if loaded else "none of " + ", ".join(FORBIDDEN)),
    ]
    return rows, {"processes_each": reps, "log_level": NO_LOGGING}


if __name__ == "__main__":
    main("import", measure, child)
