from __future__ import annotations

import subprocess
import sys


def test_import_loads_no_heavy_dependencies():
    code = (
        "import sys, routerank\n"
        "routerank.load_dataset, routerank.evaluate, routerank.build_pipeline, routerank.Run\n"
        "import routerank.retrieve, routerank.cli\n"
        "heavy = [m for m in ('torch', 'transformers', 'faiss', 'sentence_transformers') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_unknown_attribute_is_an_attribute_error():
    import routerank

    try:
        routerank.nonexistent  # noqa: B018
    except AttributeError as exc:
        assert "nonexistent" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_all_lists_exactly_the_lazy_exports():
    import routerank

    assert sorted(routerank.__all__) == sorted(routerank._EXPORTS)
    assert all(hasattr(routerank, name) for name in ("Reranker", "load_dataset", "build_pipeline"))
