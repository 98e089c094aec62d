"""User-facing text names methods, data and runs, never the work units the project was built in.

Every tracked text file (docs, results, help texts, docstrings, comments, JSON payloads) and every tracked
file name is scanned: a run is identified by its date, commit, command and machine, not by "session 12",
"issue-19 re-run", "pre-issue code" or a device tool's parameter names.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: words that name a unit of development work; plain "session" / "issue" stay legal (pytest's
#: ``scope="session"``, "a known issue"), only numbered or process-relative uses are refused
WORK_UNIT = re.compile(
    r"\b(?:sessions?|issues?)[ _-]?\d+(?!\.\d)\b"  # session 12, sessions 7-11, issue-19, issue 16
    r"|\bpre-(?:issue|session)\b"  # pre-issue code
    r"|\b(?:this|earlier|previous|next|later|every) sessions?\b"  # this session's fix
    r"|\bintegrator\b|\bGPU lent\b|\bdevice tool\b|\btimeout_s\b",  # the development machinery
    re.IGNORECASE,
)
#: a file named after a work unit: mirage_s12.png, g2m_ind_s14.json, cv_s9.sh
WORK_UNIT_FILE = re.compile(r"(?:^|[_/-])s\d{1,2}(?:[._-][\w.-]*)?\.(?:png|json|sh|md|py|txt)$")
TEXT_SUFFIXES = {".py", ".md", ".json", ".txt", ".toml", ".cfg", ".ini", ".yml", ".yaml", ".sh", ""}
SELF = Path(__file__).resolve()


def tracked_files() -> list[Path]:
    """The repository's tracked files (every file under the root when git is not available)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.SubprocessError):
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]
    return [ROOT / n for n in names if (ROOT / n).is_file()]


def work_unit_mentions(text: str) -> list[str]:
    """``line: excerpt`` for every work-unit word in ``text``."""
    return [f"{i}: {m.group(0)!r} in {line.strip()[:120]!r}" for i, line in enumerate(text.splitlines(), 1)
            for m in WORK_UNIT.finditer(line)]  # fmt: skip


@pytest.mark.parametrize("text", ["see session 12", "Sessions 7-11 had no GPU", "the issue-19 re-run", "pre-issue code",
                                  "fixed in this session", "`timeout_s` 600", "the integrator's jobs", "issue 16"])
def test_pattern_catches_work_unit_words(text):
    assert work_unit_mentions(text)


@pytest.mark.parametrize("text", ['@pytest.fixture(scope="session")', "a session-scoped fixture", "a known issue with PyG",
                                  "GitHub issue #15 of aimat-lab/gcnn_keras", "torch 2.13 sessions", "the issues list",
                                  "SESSION_TIMEOUT", "molbace_full_gin_s3"])
def test_pattern_leaves_ordinary_words_alone(text):
    assert not work_unit_mentions(text)


def test_file_name_pattern():
    assert WORK_UNIT_FILE.search("experiments/results/mirage_s12.png") and WORK_UNIT_FILE.search("runs/cv_s9.sh")
    assert WORK_UNIT_FILE.search("g2m_ind_s14.json") and WORK_UNIT_FILE.search("a/cv_s11_NCI1.json")
    assert not WORK_UNIT_FILE.search("experiments/results/mirage_equal_bytes.png") and not WORK_UNIT_FILE.search("tests/test_s3dis.py")


def test_no_tracked_file_names_a_work_unit():
    files = tracked_files()
    assert len(files) > 50, "the tracked tree was not found"
    bad = {str(f.relative_to(ROOT)): mentions for f in files if f != SELF and f.suffix in TEXT_SUFFIXES
           if (mentions := work_unit_mentions(f.read_text(encoding="utf-8", errors="replace")))}  # fmt: skip
    bad |= {str(f.relative_to(ROOT)): ["file name"] for f in files if WORK_UNIT_FILE.search(str(f.relative_to(ROOT)))}
    assert not bad, "work-unit words in user-facing text:\n" + "\n".join(f"{k}:{m}" for k, v in sorted(bad.items()) for m in v[:5])


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            for m in re.finditer(r"^#{1,6} (.+)$", markdown, re.M)}  # fmt: skip


def test_links_of_the_readme_and_results_pages_resolve():
    pages = [ROOT / "README.md", *sorted((ROOT / "experiments" / "results").glob("*.md"))]
    broken = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for link in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", link):  # http(s), mailto: not checked offline
                continue
            path, _, anchor = link.partition("#")
            target = (page.parent / path) if path else page
            if not target.exists():
                broken.append(f"{page.relative_to(ROOT)}: {link} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in _anchors(target.read_text(encoding="utf-8")):
                broken.append(f"{page.relative_to(ROOT)}: {link} (no such heading)")
    assert not broken, "\n".join(broken)
