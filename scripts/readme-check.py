#!/usr/bin/env python3
"""Renders README.md as GitHub does (CommonMark plus tables, with markdown-it-py) and fails
on what a reader would trip over:

- a line that looks like a table row (starts with `|`) but does not render inside a table,
  and a paragraph glued to a table (it renders as a broken row);
- a relative link or image whose file does not exist;
- a `#anchor` link to a heading that does not exist;
- a shell example that types `pisgate …` where, with scripts/run.sh's stack, the command is
  `scripts/pisgate …` (the binary is not on the PATH of a fresh clone).

  python3 scripts/readme-check.py [README.md]
"""
import re
import sys
from pathlib import Path

from markdown_it import MarkdownIt


def slug(text: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def check(path: Path) -> list[str]:
    source = path.read_text()
    lines = source.splitlines()
    md = MarkdownIt("commonmark").enable("table")
    tokens = md.parse(source)
    errors = []

    table_lines, fenced_lines = set(), set()
    anchors = set()
    for i, t in enumerate(tokens):
        if t.type == "table_open" and t.map:
            table_lines.update(range(t.map[0], t.map[1]))
        if t.type in ("fence", "code_block") and t.map:
            fenced_lines.update(range(t.map[0], t.map[1]))
            if t.type == "fence" and t.info.strip() in ("sh", "bash", "shell"):
                for n, line in enumerate(t.content.splitlines()):
                    if re.match(r"\s*pisgate\s", line):
                        errors.append(f"line {t.map[0] + n + 2}: a shell example types `pisgate`; "
                                      "with scripts/run.sh's stack it is `scripts/pisgate`")
        if t.type == "heading_open":
            anchors.add(slug(tokens[i + 1].content))
    for n, line in enumerate(lines):
        if line.lstrip().startswith("|") and n not in table_lines and n not in fenced_lines:
            errors.append(f"line {n + 1}: renders as text, not as a table row: {line[:60]}")
        if n in table_lines and not line.lstrip().startswith("|"):
            errors.append(f"line {n + 1}: text glued to the table above renders as a broken "
                          f"row (add a blank line): {line[:60]}")

    def links(token_list):
        for t in token_list:
            if t.children:
                yield from links(t.children)
            if t.type == "link_open":
                yield t.attrs.get("href", ""), t.map
            if t.type == "image":
                yield t.attrs.get("src", ""), t.map

    for target, _ in links(tokens):
        if re.match(r"^[a-z]+:", target):
            continue
        if target.startswith("#"):
            if target[1:] not in anchors:
                errors.append(f"link to #{target[1:]}: no such heading")
            continue
        file = target.split("#")[0]
        if file and not (path.parent / file).exists():
            errors.append(f"link to {file}: no such file")
    return errors


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    errors = check(path)
    for e in errors:
        print(f"{path}: {e}")
    if not errors:
        print(f"{path}: renders cleanly (tables, links, anchors, commands)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
