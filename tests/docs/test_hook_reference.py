"""docs/hooks.md is generated from core/hookspecs.py and must not go stale."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_generator():
    spec = importlib.util.spec_from_file_location("_gen_hooks", ROOT / "docs" / "_gen_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_hook_reference_matches_the_hookspec_docstrings():
    """docs/hooks.md equals what docs/_gen_hooks.py renders from the hookspecs today;
    after changing a hookspec, run `python docs/_gen_hooks.py`."""
    generator = load_generator()
    current = (ROOT / "docs" / "hooks.md").read_text(encoding="utf-8")
    assert current == generator.render(), "docs/hooks.md is stale: run `python docs/_gen_hooks.py`"


def test_the_hook_reference_documents_every_hook():
    """Every hookspec has its own section in docs/hooks.md, with its docstring."""
    import inspect

    from headwater import hookspecs

    text = (ROOT / "docs" / "hooks.md").read_text(encoding="utf-8")
    for name, fn in vars(hookspecs).items():
        if name.startswith("headwater_") and inspect.isfunction(fn):
            assert f"\n## {name}\n" in text
            first_line = inspect.getdoc(fn).splitlines()[0].replace("``", "`")
            assert first_line in text


def test_plugins_guide_links_to_the_reference():
    """The plugin guide points readers at the generated hook reference."""
    assert "(hooks.md)" in (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
