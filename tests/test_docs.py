"""The docs stay user documentation: docs/ within its line budget, no lab-notebook traces (clock
times, dates, issue numbers, "previous" result columns) in docs/*.md or README.md, and every
relative link and anchor pointing at something that exists. Each check is a function of the text,
so the tests below also show it catching a bad sample and passing a harmless look-alike."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
LINE_BUDGET = 1800

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"``.+?``|`[^`\n]+`")
# A time of day: hours 0-23, minutes 00-59 or a vague "2x" ("13:2x UTC"). Ratios (3:1, 16:9) have a
# one-digit right side; ports (127.0.0.1:8000) and slices (x[i : i + 1]) do not fit either.
CLOCK = re.compile(r"(?<![\w.:])(?:[01]?\d|2[0-3]):[0-5][\dx](?![\w:])")
DATE = re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b")
NOTEBOOK_PHRASES = re.compile(
    r"\b(?:UTC|this morning|this session|beside other jobs|beside (?:a|one|two|three) (?:\S+ )?training jobs?"
    r"|busy machine|shared with other jobs)\b",
    re.I,
)
ISSUE = re.compile(r"\bissues? #?\d+\b|(?<![\w&/#(])#\d+\b", re.I)
HISTORY_HEADERS = {"previous", "before", "before that", "first", "earlier", "old", "then", "now", "after", "was"}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code: commands and error messages may hold
    timestamps or ``#`` comments that are not history."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def lines_over_budget(paths: list[Path], budget: int = LINE_BUDGET) -> int:
    """How many lines the files hold beyond ``budget`` (0 when within it)."""
    total = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in paths)
    return max(0, total - budget)


def clock_times(text: str) -> list[str]:
    """Clock times, dates and lab-notebook phrases in the prose."""
    body = prose(text)
    return CLOCK.findall(body) + DATE.findall(body) + NOTEBOOK_PHRASES.findall(body)


def issue_refs(text: str) -> list[str]:
    return ISSUE.findall(prose(text))


def history_headers(text: str) -> list[str]:
    """Table header cells that name an earlier result ("previous", "before that", "first", ...)."""
    found = []
    rows = FENCE.sub("", text).splitlines()
    for head, rule in zip(rows, rows[1:], strict=False):
        if head.lstrip().startswith("|") and re.fullmatch(r"\s*\|?[\s:|-]+\|?\s*", rule) and "-" in rule:
            for cell in head.strip().strip("|").split("|"):
                name = re.sub(r"[*_`]", "", cell).strip().lower()
                if name in HISTORY_HEADERS or name.startswith(("previous", "before (", "before:")):
                    found.append(cell.strip())
    return found


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", text).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(path: Path, text: str) -> list[str]:
    """Relative links (and their #anchors into Markdown files) that point at nothing."""
    broken = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        if not file_part:  # an anchor in this page
            broken += [target] if anchor not in anchors(text) else []
            continue
        dest = (path.parent / file_part).resolve()
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            broken.append(target)
    return broken


CHECKED = [*pages(), REPO / "README.md"]


def test_docs_stay_within_the_line_budget() -> None:
    over = lines_over_budget(pages())
    assert not over, f"docs/*.md is {over} lines over {LINE_BUDGET}: move history to CHANGELOG.md, cut repeats"


def test_the_line_budget_check_can_fail(tmp_path: Path) -> None:
    page = tmp_path / "long.md"
    page.write_text("line\n" * (LINE_BUDGET + 1))
    assert lines_over_budget([page]) == 1
    page.write_text("line\n" * LINE_BUDGET)
    assert lines_over_budget([page]) == 0


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_clock_times_dates_or_notebook_phrases(path: Path) -> None:
    assert clock_times(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_issue_numbers(path: Path) -> None:
    assert issue_refs(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_previous_result_columns(path: Path) -> None:
    assert history_headers(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_point_at_existing_files_and_headings(path: Path) -> None:
    assert broken_links(path, path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "bad",
    [
        "Measured 07:12–07:22 UTC on the box.",
        "re-run at 13:2x with the fix",
        "## Faint ink (2026-12-01, later)",
        "the box was much faster this morning",
        "one thread, beside other jobs",
    ],
)
def test_the_clock_check_catches_history(bad: str) -> None:
    assert clock_times(bad)


@pytest.mark.parametrize(
    "fine",
    [
        "a 3:1 ratio, 16:9 screens",
        "`x[i : i + 1]` and `since 2026-11-30 02:10:00` in an error message",
        "serve on http://127.0.0.1:8000/ or localhost:8765",
        "```\n$ date\n07:12\n```",
    ],
)
def test_the_clock_check_passes_look_alikes(fine: str) -> None:
    assert clock_times(fine) == []


def test_the_issue_check() -> None:
    assert issue_refs("fixed in issue 12") and issue_refs("see #13 for the fix") and issue_refs("Issues 4")
    assert issue_refs("[serving.md](serving.md#limits) and `# a comment` and &#123; and x#1y") == []


def test_the_header_check() -> None:
    table = "| condition | accuracy | previous | before that | first |\n| --- | ---: | ---: | ---: | ---: |\n"
    assert history_headers(table) == ["previous", "before that", "first"]
    fine = "| data | ECE before | ECE after |\n| --- | ---: | ---: |\n| previous | 1 | 2 |\n"
    assert history_headers(fine) == []  # a body cell or "ECE before" is not an earlier result


def test_the_link_check(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A page\n\n## Limits and memory\n")
    page = tmp_path / "b.md"
    text = "[ok](a.md) [ok](a.md#limits-and-memory) [web](https://example.org/x) [self](#top)\n# Top\n"
    assert broken_links(page, text) == []
    bad = "[gone](missing.md) ![img](images/none.png) [anchor](a.md#no-such-heading)"
    assert broken_links(page, bad) == ["missing.md", "images/none.png", "a.md#no-such-heading"]
    assert broken_links(page, "```\n[in code](nowhere.md)\n```") == []
