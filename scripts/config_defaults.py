"""Rewrite the values of the "every key, with its default" block of docs/training.rst from the code.

The block is YAML with one key per line and a comment after it; this keeps the keys, their order
and the comments, and sets every value to :func:`relaxed_e3nn.train._config.config_defaults`
(the dataclass defaults of ``TrainConfig`` and its sections, ``RelaxedNetworkConfig`` and the loss
weights). Keys that the code has and the block lacks are listed (add them with a comment).
tests/test_docs_defaults.py checks that the block agrees with the code.

Usage: python scripts/config_defaults.py [docs/training.rst] [--check]
"""
import argparse
import re
import sys
from pathlib import Path

import yaml

from relaxed_e3nn.train._config import config_defaults

_START = "Every key, with its default"
_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_0-9]+):(?P<value>[^#]*?)(?P<comment>\s+#.*)?$")


def block_span(lines):
    """``(first, last)`` line indices of the YAML block after the "Every key" sentence."""
    start = next(k for k, line in enumerate(lines) if _START in line)
    first = next(k for k in range(start, len(lines)) if lines[k].strip().startswith(".. code-block:: yaml")) + 2
    last = first
    while last < len(lines) and (lines[last].startswith("   ") or not lines[last].strip()):
        last += 1
    return first, last


def format_value(value) -> str:
    text = yaml.safe_dump([value], default_flow_style=True, width=10**6, allow_unicode=True).strip()
    return text[1:-1]


def rewrite(text: str):
    """The docs text with the block's values from the code, and the keys the block lacks."""
    lines = text.split("\n")
    first, last = block_span(lines)
    defaults = config_defaults()
    sections, seen = [], set()
    for k in range(first, last):
        match = _LINE.match(lines[k])
        if not match or lines[k].lstrip().startswith("#"):
            continue
        depth = (len(match["indent"]) - 3) // 2
        sections = sections[:depth] + [match["key"]]
        key = ".".join(sections)
        if key not in defaults:
            continue
        seen.add(key)
        head = f"{match['indent']}{key.rsplit('.', 1)[-1]}: {format_value(defaults[key])}"
        comment = (match["comment"] or "").strip()
        lines[k] = (f"{head:<32}" if len(head) < 32 else head + "  ") + comment if comment else head
    return "\n".join(lines), sorted(set(defaults) - seen)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default="docs/training.rst")
    parser.add_argument("--check", action="store_true", help="only say whether the file is up to date")
    args = parser.parse_args()
    path = Path(args.path)
    text = path.read_text()
    new, missing = rewrite(text)
    if missing:
        print(f"keys missing from the block (add them with a comment): {missing}")
    if args.check:
        print("up to date" if new == text and not missing else "out of date")
        return int(new != text or bool(missing))
    path.write_text(new)
    return int(bool(missing))


if __name__ == "__main__":
    sys.exit(main())
