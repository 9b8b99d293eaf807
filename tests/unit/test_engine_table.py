"""The README's engine table is the rendering of what tests/e2e/test_engines.py saw, and every cell was run."""

from __future__ import annotations

from pathlib import Path

from tests import engine_table


def test_readme_table_is_made_from_the_committed_observations() -> None:
    committed = engine_table.load(engine_table.COMMITTED)
    table = engine_table.readme_table(engine_table.README.read_text())
    assert table == engine_table.render(committed), "README is stale: python -m tests.engine_table --update"


def test_every_cell_of_every_suite_was_run() -> None:
    committed = engine_table.load(engine_table.COMMITTED)
    assert set(committed) == set(engine_table.ROWS)
    for suite, row in committed.items():
        assert row.get("engine", "").startswith("docker.io ") or suite == "bullseye,trixie", suite
        for key, _ in engine_table.COLUMNS:
            cell = row.get(key)
            assert cell and cell["outcome"] and cell["detail"], f"{suite} / {key} was not run"


def test_partial_runs_update_only_their_cells_and_differences_name_them() -> None:
    committed: engine_table.Matrix = {
        "trixie": {"engine": "docker.io 26.1.5", "swarm": {"outcome": "converges", "detail": "a"}}
    }
    seen: engine_table.Matrix = {
        "trixie": {"swarm": {"outcome": "converges", "detail": "b"}},
        "forky": {"engine": "docker.io 28"},
    }
    merged = engine_table.merge(committed, seen)
    assert merged["trixie"] == {"engine": "docker.io 26.1.5", "swarm": {"outcome": "converges", "detail": "b"}}
    assert merged["forky"] == {"engine": "docker.io 28"} and committed["trixie"]["swarm"]["detail"] == "a"
    diff = engine_table.differences(committed, seen)
    assert len(diff) == 2 and diff[0].startswith("trixie / swarm: committed") and diff[1].startswith("forky / engine")
    assert engine_table.differences(merged, seen) == []


def test_render_escapes_pipes_and_marks_missing_cells() -> None:
    cell = {"outcome": "converges", "detail": ""}
    table = engine_table.render({"forky": {"engine": "docker.io 28|x", "swarm": cell}})
    row = table.splitlines()[3]
    assert row.startswith("| `forky`: docker.io 28\\|x | not run | not run | not run | **converges** | not run |")


def test_check_fails_on_a_stale_readme_and_update_rewrites_it(tmp_path: Path) -> None:
    readme, committed, seen = tmp_path / "README.md", tmp_path / "matrix.json", tmp_path / "seen.json"
    readme.write_text(f"# x\n{engine_table.BEGIN}\nold\n{engine_table.END}\ntail\n")
    committed.write_text("{}")
    seen.write_text('{"trixie": {"engine": "docker.io 26.1.5"}}')
    paths = {"readme": readme, "committed_path": committed}
    assert engine_table.main([], **paths) == 1
    assert engine_table.main(["--update", str(seen)], **paths) == 0
    assert "| `trixie`: docker.io 26.1.5 |" in readme.read_text() and readme.read_text().endswith("tail\n")
    assert engine_table.main([], **paths) == 0
    assert engine_table.main(["--update", str(tmp_path / "none.json")], **paths) == 1
