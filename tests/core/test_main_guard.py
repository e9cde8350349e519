"""headwater.main_guard: telling a flow call in a script's top-level code from one under
``if __name__ == "__main__":``, and a script imported again by a worker process. Each
case runs a real script in a child process (the check reads the caller's frames and
the script's source)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''\
    import runpy
    import sys
    from headwater.main_guard import MainGuardMissing, check_main_guard, reimporting_main, unguarded_main_call

    def where(label):
        print(label, unguarded_main_call(), reimporting_main())

    def main():
        where("in-function")

    where("top")
    main()
    for _ in range(1):
        where("in-loop")
    if __name__ == "__main__":
        where("guarded")
        try:
            where("guarded-try")
        finally:
            pass
    else:
        where("else-branch")
        try:
            check_main_guard("etl", None)
        except MainGuardMissing as exc:
            print("refused:", exc)
    if "__main__" == __name__:
        where("guarded-reversed")
    if __name__ == "__main__" and len(sys.argv) > 1:
        where("guarded-and")
        runpy.run_path(__file__, run_name="__mp_main__")  # as multiprocessing's spawn does
''')


@pytest.fixture(scope="module")
def lines(tmp_path_factory):
    script = tmp_path_factory.mktemp("guard") / "etl.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), "again"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return script, done.stdout.splitlines()


def test_a_top_level_call_is_found_with_its_file_and_line(lines):
    script, out = lines
    assert f"top {script}:11 False" in out
    assert f"in-function {script}:12 False" in out  # main() called unguarded
    assert f"in-loop {script}:14 False" in out


def test_calls_under_the_main_guard_pass(lines):
    _, out = lines
    assert "guarded None False" in out
    assert "guarded-try None False" in out
    assert "guarded-reversed None False" in out
    assert "guarded-and None False" in out


def test_a_script_imported_again_is_recognised_and_refused(lines):
    _, out = lines
    assert any(line.startswith("else-branch ") and line.endswith(" True") for line in out)
    refused = [line for line in out if line.startswith("refused:")]
    assert refused == ["refused: flow 'etl' was called while a worker process imported the script "
                       "again: put the script's flow calls under `if __name__ == \"__main__\":`"]


def test_code_no_worker_imports_again_passes():
    """``python -c`` has no file a spawned process would import again."""
    code = "from headwater.main_guard import unguarded_main_call; print(unguarded_main_call())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "None", done.stderr
