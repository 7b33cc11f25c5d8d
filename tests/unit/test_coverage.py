"""`tfops coverage`: the runbook is parsed, every item is mapped, and gaps are reported, not hidden."""

from __future__ import annotations

from pathlib import Path

from deployments import coverage
from deployments.cli import main
from flows.registry import FLOWS

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = (ROOT / "docs" / "RUNBOOK.md").read_text()


def ids() -> set[str]:
    return {i.id for i in coverage.parse(RUNBOOK)}


def test_items_come_from_lists_code_blocks_and_list_less_sections() -> None:
    found = ids()
    # numbered and bulleted items, nested under their numbered parent
    assert "morning-checklist/wallet-balance-check" in found
    assert "evening-checklist/metrics-review/tokens-created" in found
    # checkboxes and steps written inside code blocks
    assert "morning-checklist/system-health-check/frontend-responsive" in found
    assert "p0-critical-incident-response/immediate-actions/create-incident-channel" in found
    assert "api-rate-limit-hit/queue-non-critical-requests" in found
    assert "backend-recovery/npx-convex-deploy-prod" in found
    # a common incident is an item itself; a table or tree with no list is one item
    assert {"frontend-down", "convex-backend-error", "severity-levels", "decision-trees"} <= found
    # the Appendix C checklist, all seven
    assert len([i for i in found if i.startswith("recovery-checklist/")]) == 7
    # reference material and grouping headings are not items
    assert not {i for i in found if i.startswith(("table-of-contents", "useful-scripts", "external-contacts"))}
    assert "common-incidents" not in found


def test_the_committed_map_covers_the_runbook_with_flows_that_exist() -> None:
    result = coverage.cover(coverage.parse(RUNBOOK), coverage.load_map(ROOT / "docs" / "coverage.toml"), set(FLOWS))
    assert [i.id for i in result.unexplained] == []
    assert result.stale == []
    assert result.unknown_flows == []
    assert result.count("automated") > result.count("manual") + result.count("not covered")


def test_a_new_runbook_item_shows_as_not_covered_and_fails(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    runbook = tmp_path / "RUNBOOK.md"
    runbook.write_text(RUNBOOK.replace("   - Error rates\n", "   - Error rates\n   - Gas refunds issued\n"))
    assert main(["coverage", "--runbook", str(runbook)]) == 1
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "Gas refunds issued" in ln)
    assert line.rstrip().endswith("not covered")
    assert "1 without an explanation" in out


def test_stale_entries_and_unknown_flows_are_reported(tmp_path: Path) -> None:
    mapping = tmp_path / "coverage.toml"
    mapping.write_text(
        (ROOT / "docs" / "coverage.toml").read_text()
        + '"gone/item" = { flow = "system-health" }\n'
        + '"also-gone" = { flow = "no-such-flow" }\n'
    )
    result = coverage.cover(coverage.parse(RUNBOOK), coverage.load_map(mapping), set(FLOWS))
    assert result.stale == ["also-gone", "gone/item"]
    assert "no-such-flow" in result.unknown_flows and "system-health" not in result.unknown_flows
    assert "no-such-flow" in coverage.as_text(result)


def test_an_entry_without_a_kind_is_bad_input(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    mapping = tmp_path / "coverage.toml"
    mapping.write_text('[items]\n"frontend-down" = { step = "x" }\n')
    assert main(["coverage", "--map", str(mapping)]) == 2
    assert "frontend-down" in capsys.readouterr().err


def test_markdown_names_manual_steps_and_reasons() -> None:
    result = coverage.cover(coverage.parse(RUNBOOK), coverage.load_map(ROOT / "docs" / "coverage.toml"), set(FLOWS))
    table = coverage.as_markdown(result)
    assert "| Database Recovery | Contact Convex support | manual: guided by `database-recovery` |" in table
    assert "not covered: competitors' fees have no API" in table


def test_the_readme_shows_the_current_coverage_table() -> None:
    result = coverage.cover(coverage.parse(RUNBOOK), coverage.load_map(ROOT / "docs" / "coverage.toml"), set(FLOWS))
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- coverage:start -->\n", 1)[1].split("\n<!-- coverage:end -->", 1)[0]
    assert block.strip() == coverage.as_markdown(result).strip(), "refresh it with `tfops coverage --markdown`"
