"""Runbook coverage: every checklist item and procedure step of `docs/RUNBOOK.md`, with the flow that
automates it, the flow that guides the person who must do it, or why it is not covered.

The runbook is parsed, not copied: an item added to the runbook shows up as "not covered" until
`docs/coverage.toml` says what happens to it, and an entry whose item left the runbook is reported
as stale. Items are numbered or bulleted lines (also inside the runbook's code blocks, where many of
its steps are written) and, for a section with no list, the section itself.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# Sections that are reference material rather than things to do.
_SKIPPED_SECTIONS = {"table-of-contents", "external-contacts", "emergency-hotline", "useful-scripts"}
_HEADING = re.compile(r"^(#{2,4})\s+(.*)$")
_NUMBERED = re.compile(r"^(\s*)(?:(?:#|//)\s*)?\d+\.\s+(.*)$")
_BULLET = re.compile(r"^(\s*)-\s+(?:\[[ xX]\]\s+)?(.*)$")
_LABEL = re.compile(r"^\*\*[^*]+\*\*:?\s*$")
_BOLD = re.compile(r"^\*\*(.+?)\*\*(.*)$")

Kind = Literal["automated", "manual", "not covered"]


def slug(text: str) -> str:
    text = re.sub(r"\(.*?\)", "", text)  # "(9:00 AM UTC)", "(0-15 min)": the name is enough
    text = re.sub(r"^[A-Z0-9]{1,2}\.\s+", "", text.strip())  # "1. Frontend Down", "C. Recovery Checklist"
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass(frozen=True)
class Item:
    section: str  # the nearest heading, as written
    text: str  # the item, as written (bold markers and checkboxes removed)
    id: str  # section slug / parent slug / item slug


@dataclass(frozen=True)
class Entry:
    kind: Kind
    by: str = ""  # the flow (automated / manual) ...
    how: str = ""  # ... what it does, or why nothing does
    step: str = ""  # the task or step inside the flow, when it helps the reader


@dataclass
class Coverage:
    rows: list[tuple[Item, Entry]] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # mapped ids no longer in the runbook
    unknown_flows: list[str] = field(default_factory=list)  # mapped flows that do not exist

    def count(self, kind: Kind) -> int:
        return sum(1 for _, e in self.rows if e.kind == kind)

    @property
    def unexplained(self) -> list[Item]:
        return [i for i, e in self.rows if e.kind == "not covered" and not e.how]


def _clean(text: str) -> str:
    text = text.strip().rstrip(":").strip()
    m = _BOLD.match(text)
    if m:
        text = (m.group(1) + m.group(2)).strip().rstrip(":").strip()
    return text.strip("`").strip()


def parse(markdown: str) -> list[Item]:
    items: list[Item] = []
    section = ""
    section_slug = ""
    parent = ""  # the last top-level numbered item: the item an indented or fenced line belongs to
    section_had_items = True
    section_had_body = False
    in_code = False
    seen: set[str] = set()

    def add(text: str, under: str, ident: str = "") -> None:
        nonlocal section_had_items
        section_had_items = True
        ident = ident or "/".join(p for p in (section_slug, slug(under), slug(text)) if p)
        if ident not in seen and slug(text):
            seen.add(ident)
            items.append(Item(section=section, text=text, id=ident))

    def close_section() -> None:
        # A section with a body but no list (a table, a tree, a snippet) is one item; a heading that
        # only groups deeper headings is none.
        if section and section_had_body and not section_had_items:
            items.append(Item(section=section, text=section, id=section_slug))

    for raw in markdown.splitlines():
        line = raw.rstrip()
        if line.strip() and not _HEADING.match(line):
            section_had_body = True
        if line.strip().startswith("```"):
            in_code = not in_code
            continue
        heading = None if in_code else _HEADING.match(line)
        if heading:
            close_section()
            level, title = len(heading.group(1)), heading.group(2).strip()
            title = re.sub(r"^[A-Z0-9]{1,2}\.\s+", "", title)  # "4. Database Recovery": the list number is noise
            section, section_slug, parent = ("", "", "") if level == 2 else (title, slug(title), "")
            section_had_items = level == 2 or section_slug in _SKIPPED_SECTIONS
            section_had_body = False
            if level == 4:  # a common incident: the incident itself is what gets handled
                add(title, "", ident=section_slug)
            continue
        if not section or section_slug in _SKIPPED_SECTIONS:
            continue
        if not in_code and _LABEL.match(line):  # "**Code:**", "**Order of Operations:**"
            parent = ""
            continue
        numbered, bullet = _NUMBERED.match(line), _BULLET.match(line)
        if numbered:
            text = _clean(numbered.group(2))
            if in_code or numbered.group(1):
                add(text, parent)
            else:
                parent = text
                add(text, "")
        elif bullet:
            add(_clean(bullet.group(2)), parent)
    close_section()
    return items


def load_map(path: Path) -> dict[str, Entry]:
    data = tomllib.loads(path.read_text())
    out: dict[str, Entry] = {}
    for ident, spec in data.get("items", {}).items():
        if "flow" in spec:
            out[ident] = Entry("automated", spec["flow"], spec.get("how", ""), spec.get("step", ""))
        elif "guided_by" in spec:
            out[ident] = Entry("manual", spec["guided_by"], spec.get("how", ""))
        elif "not_covered" in spec:
            out[ident] = Entry("not covered", "", spec["not_covered"])
        else:
            raise ValueError(f"{path}: items.{ident!r} needs one of flow, guided_by, not_covered")
    return out


def cover(items: list[Item], mapping: dict[str, Entry], flows: set[str]) -> Coverage:
    result = Coverage()
    for item in items:
        result.rows.append((item, mapping.get(item.id, Entry("not covered"))))
    present = {i.id for i in items}
    result.stale = sorted(set(mapping) - present)
    result.unknown_flows = sorted(
        {e.by for e in mapping.values() if e.kind != "not covered" and e.by and e.by not in flows}
    )
    return result


def describe(entry: Entry) -> str:
    if entry.kind == "automated":
        return f"{entry.by}" + (f" ({entry.step})" if entry.step else "")
    if entry.kind == "manual":
        return f"manual: guided by {entry.by}"
    return "not covered" + (f": {entry.how}" if entry.how else "")


def as_text(cov: Coverage) -> str:
    width = max((len(i.text) for i, _ in cov.rows), default=10)
    lines: list[str] = []
    section = None
    for item, entry in cov.rows:
        if item.section != section:
            section = item.section
            lines.append(f"\n{section}")
        lines.append(f"  {item.text:<{width}}  {describe(entry)}")
    lines.append(_summary(cov))
    return "\n".join(lines).lstrip("\n")


def as_markdown(cov: Coverage) -> str:
    lines = ["| Runbook section | Item | Automated by |", "|---|---|---|"]
    for item, entry in cov.rows:
        cell = describe(entry).replace("|", "\\|")
        if entry.kind == "automated":
            cell = f"`{entry.by}`" + (f" ({entry.step})" if entry.step else "")
        elif entry.kind == "manual":
            cell = f"manual: guided by `{entry.by}`"
        lines.append(f"| {item.section} | {item.text} | {cell} |")
    lines.append("")
    lines.append(_summary(cov))
    return "\n".join(lines)


def _summary(cov: Coverage) -> str:
    text = (
        f"\n{len(cov.rows)} runbook items: {cov.count('automated')} automated, "
        f"{cov.count('manual')} guided for a person, {cov.count('not covered')} not covered"
        f" ({len(cov.unexplained)} without an explanation)."
    )
    if cov.stale:
        text += f"\nStale entries in the coverage map (no longer in the runbook): {', '.join(cov.stale)}"
    if cov.unknown_flows:
        text += f"\nFlows named in the coverage map that do not exist: {', '.join(cov.unknown_flows)}"
    return text
