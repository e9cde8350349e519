"""Cache keys do not depend on how a flow's file is started.

The same file is run three ways, each in its own process over one HEADWATER_HOME: as a
script (``python pipelines/etl.py``, module ``__main__``), through ``headwater run
pipelines/etl.py:etl`` (module ``etl``), and imported from another directory
(``import pipelines.etl``). The second and third must be cache hits, the task body
must run once per input, and ``headwater cache ls --json`` must list one entry per
input. The task also takes an enum defined in the same file, whose class is
``__main__.Tier``, ``etl.Tier`` or ``pipelines.etl.Tier`` depending on the start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ETL = textwrap.dedent('''
    import enum
    import sys
    from pathlib import Path

    from headwater import flow, task
    from headwater.tasks import task_input_hash

    CALLS = Path(__file__).resolve().parent / "calls.txt"


    class Tier(enum.Enum):
        GOLD = "gold"
        SILVER = "silver"


    @task(cache_key_fn=task_input_hash)
    def extract(region: str, tier: Tier) -> str:
        with CALLS.open("a") as handle:  # one line per real call of the body
            handle.write(region + "\\n")
        return f"{region}-{tier.value}"


    @flow
    def etl(region: str, tier: Tier = Tier.GOLD) -> str:
        state = extract(region, tier, return_state=True)
        return f"{state.name}:{state.result()}:{state.state_details.cache_key}"


    if __name__ == "__main__":
        for region in sys.argv[1:]:
            print(etl(region))
''')

HEADWATER = str(Path(sys.executable).with_name("headwater"))


def run(argv: list[str], cwd: Path, home: Path, pythonpath: Path | None = None) -> str:
    env = dict(os.environ, HEADWATER_HOME=str(home), HEADWATER_LOGGING_LEVEL="WARNING")
    for key in ("HEADWATER_LOCAL_STORAGE_PATH", "HEADWATER_DATABASE_URL", "PYTHONPATH"):
        env.pop(key, None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    return out.stdout


def outcomes(text: str) -> list[list[str]]:
    """``name:result:key`` lines the flow printed (or returned, under headwater run)."""
    found = []
    for line in text.splitlines():
        if "result=" in line:  # headwater run prints the flow's final state
            line = line.split("result=", 1)[1].rstrip(")").strip("'\"")
        found.append(line.split(":", 2))
    return found


@pytest.mark.parametrize("layout", ["package in a project", "lone file"])
def test_a_cached_task_hits_however_its_file_is_started(tmp_path: Path, layout: str) -> None:
    home = tmp_path / "home"
    if layout == "package in a project":
        root = tmp_path / "project"
        (root / "pipelines").mkdir(parents=True)
        (root / "pyproject.toml").write_text("[project]\nname = 'etl-demo'\n")
        (root / "pipelines" / "__init__.py").write_text("")
        script, module = "pipelines/etl.py", "pipelines.etl"
    else:
        root = tmp_path / "lone"
        root.mkdir()
        script, module = "etl.py", "etl"
    (root / script).write_text(ETL)
    calls = root / script.replace("etl.py", "calls.txt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    first = outcomes(run([sys.executable, script, "asia", "europe"], root, home))
    assert [o[:2] for o in first] == [["Completed", "asia-gold"], ["Completed", "europe-gold"]]
    keys = {o[1]: o[2] for o in first}

    second = outcomes(run([HEADWATER, "run", f"{script}:etl", "-p", "region=asia"], root, home))
    third = run([sys.executable, "-c", f"import {module} as m; print(m.etl('europe'))\n"
                 "from headwater import get_store\n"
                 "print(sorted({t.name.rsplit('-', 1)[0] for t in get_store().read_task_runs()}))"],
                elsewhere, home, root).splitlines()
    names = json.loads(third.pop().replace("'", '"'))
    third = outcomes("\n".join(third))
    assert second == [["Cached", "asia-gold", keys["asia-gold"]]]
    assert third == [["Cached", "europe-gold", keys["europe-gold"]]]
    assert calls.read_text().split() == ["asia", "europe"]  # the body ran once per input
    # Task run names carry the task key ("extract-1a2b3c4d-0"): one key in all four runs.
    assert len(names) == 1, names

    listed = json.loads(run([HEADWATER, "cache", "ls", "--json"], elsewhere, home))
    assert sorted(e["key"] for e in listed) == sorted(keys.values())
    assert [e["task_name"] for e in listed] == ["extract", "extract"]
