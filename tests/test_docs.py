"""The project's documentation: every "§" citation resolves to a heading of docs/method.md, and
docs/ stands on its own (no reference to documents outside the repository)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"
# Where citations live: code, rules, report captions, config comments (the embedded demo's
# config.yaml, config/ and config/examples/), tests, README and the docs (this file's examples are
# not citations).
CITING = [
    "workflow_scripts",
    "rules",
    "report",
    "config.yaml",
    "config",
    "docs",
    "benchmarks",
    "tests",
    "Snakefile",
    "README.md",
]
SUFFIXES = {".py", ".smk", ".rst", ".md", ".yaml", ".yml"}

HEADING = re.compile(r"^#{2,4}\s+(\d+(?:\.\d+)?[a-z]?)\.?\s", re.MULTILINE)
SECTION = r"\d+(?:\.\d+)?(?:[a-z](?![a-z]))?"
# A citation: "§4.11", "§ 4.11c,d" (both letters), "§4.5–§4.8" or "§4.1–4.4" (both ends), with
# the word before the "§" to tell whose section it is.
CITATION = re.compile(
    r"(?P<prefix>[\w./]*)\s?§\s?(?P<first>\d+(?:\.\d+)?)(?P<letter>[a-z](?![a-z]))?"
    r"(?(letter)(?P<letters>(?:,\s?[a-z](?![a-z]))*))"
    rf"(?:\s?[–-]\s?§?\s?(?P<last>{SECTION}))?"
)
# Sections of the former design notes, as they are numbered in docs/method.md.
LEGACY_DESIGN = {"3": "9", "10": "10"}


def method_sections() -> set[str]:
    return set(HEADING.findall(METHOD.read_text(encoding="utf-8")))


def citing_files() -> list[Path]:
    files = []
    for entry in CITING:
        path = ROOT / entry
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
    return [path for path in files if path != Path(__file__).resolve()]


def citations(text: str) -> list[tuple[str, str]]:
    """(prefix, section) of every section cited in ``text``; "§4.11c,d" gives 4.11c and 4.11d."""
    found = []
    for match in CITATION.finditer(text):
        prefix, first = match["prefix"], match["first"]
        letters = [match["letter"]] + (match["letters"] or "").split(",") if match["letter"] else [""]
        sections = [first + letter.strip() for letter in letters if letter.strip() or not match["letter"]]
        if match["last"]:
            sections.append(match["last"])
        found += [(prefix, section) for section in sections]
    return found


def method_section(prefix: str, section: str) -> str:
    """The docs/method.md section a citation means: the former design notes' sections are mapped;
    everything else ("docs/method.md §", "method §", "METHOD §", a bare "§") keeps its number."""
    if prefix == "DESIGN":
        return LEGACY_DESIGN.get(section, f"DESIGN {section}")
    return section


def test_method_has_the_numbered_sections_the_code_was_written_against():
    sections = method_sections()
    expected = {str(n) for n in range(1, 11)} | {"2.1", "2.2", "2.3"}
    expected |= {f"4.{n}" for n in range(1, 16)} | {f"4.11{letter}" for letter in "abcdefg"}
    expected |= {f"7.{n}" for n in range(1, 27)}
    assert not expected - sections, f"docs/method.md lacks headings {sorted(expected - sections, key=str)}"


def test_citation_parser_reads_every_written_form():
    text = (
        "docs/method.md §4.11 and method §4.11c,d; METHOD §4.5–§4.8, (METHOD §4.1–4.4), "
        "DESIGN §3, DESIGN §10, a bare §7.18, |  § | header"
    )
    assert citations(text) == [
        ("docs/method.md", "4.11"),
        ("method", "4.11c"),
        ("method", "4.11d"),
        ("METHOD", "4.5"),
        ("METHOD", "4.8"),
        ("METHOD", "4.1"),
        ("METHOD", "4.4"),
        ("DESIGN", "3"),
        ("DESIGN", "10"),
        ("bare", "7.18"),
    ]
    assert [method_section(p, s) for p, s in citations("DESIGN §3, DESIGN §10, METHOD §3")] == ["9", "10", "3"]


def test_config_comments_are_scanned():
    scanned = set(citing_files())
    configs = [ROOT / "config.yaml", *ROOT.glob("config/*.yaml"), *ROOT.glob("config/examples/*.yaml")]
    assert len(configs) > 2
    assert not [path for path in configs if path not in scanned], "config files left out of the citation checks"


def test_every_section_citation_resolves_to_a_heading():
    sections = method_sections()
    unresolved = []
    for path in citing_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for prefix, section in citations(line):
                if method_section(prefix, section) not in sections:
                    unresolved.append(f"{path.relative_to(ROOT)}:{number}: {prefix} §{section}")
    assert not unresolved, "citations without a heading in docs/method.md:\n" + "\n".join(unresolved)


def test_docs_name_no_document_outside_the_repository():
    offending = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "docs").rglob("*.md"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if re.search(r"\b(METHOD|DESIGN|STYLE)(\.md)?\s?§|\b(METHOD|DESIGN|STYLE)\.md\b", line)
    ]
    assert not offending, f"docs/ cites documents that are not in the repository: {offending}"


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces → "-"."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_docs_reach_a_file_and_heading():
    broken = []
    for path in sorted((ROOT / "docs").glob("*.md")):
        for target, anchor in re.findall(r"\]\(([\w./-]*\.md)?(?:#([\w-]+))?\)", path.read_text(encoding="utf-8")):
            linked = (path.parent / target) if target else path
            if not linked.is_file():
                broken.append(f"{path.name}: {target}")
                continue
            headings = re.findall(r"^#+\s+(.*)$", linked.read_text(encoding="utf-8"), re.MULTILINE)
            if anchor and anchor not in {github_anchor(h) for h in headings}:
                broken.append(f"{path.name}: {target}#{anchor}")
    assert not broken, f"links to missing files or headings: {broken}"


def test_code_cites_docs_method_md():
    legacy = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in citing_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if re.search(r"\b(METHOD|DESIGN)(\.md)?\s?§|METHOD section", line)
    ]
    assert not legacy, f"{len(legacy)} legacy citations; write them as 'docs/method.md §x': {legacy[:20]}"


def test_querying_doc_has_five_queries_and_a_polars_read():
    """docs/querying.md's blocks, which tests/test_querying.py runs on the micro run."""
    text = (ROOT / "docs" / "querying.md").read_text(encoding="utf-8")
    queries = re.findall(r"<!-- query: (\w+) -->\n```sql\n", text)
    polars = re.findall(r"<!-- polars: (\w+) -->\n```python\n", text)
    assert len(set(queries)) == 5 and polars and set(polars) <= set(queries)
