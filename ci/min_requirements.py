"""Write the lowest versions pyproject.toml allows as exact pins (a pip constraints file).

Every runtime dependency (``[project].dependencies`` and the optional groups named with
``--extra``) must declare a floor (``>=X``); each becomes ``name==X``, its environment marker
kept. ``make test-min`` installs the project with these pins and runs the unit tests, so that a
floor that no longer works is found before a user with an older library finds it.

    python ci/min_requirements.py [--extra fast] [-o FILE]
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")
_FLOOR = re.compile(r"^>=\s*([0-9][0-9A-Za-z.+!-]*)$")


class FloorError(ValueError):
    """A requirement without a ``>=`` floor (or with more than one)."""


def pin(requirement: str) -> str:
    """``"redis>=5.0,<6; python_version < '4'"`` -> ``"redis==5.0; python_version < '4'"``."""
    spec, _, marker = requirement.partition(";")
    match = _NAME.match(spec)
    if match is None:
        raise FloorError(f"cannot read the requirement {requirement!r}")
    name, _extras, specifiers = match.groups()
    floors = [
        found.group(1)
        for part in specifiers.split(",")
        if (found := _FLOOR.match(part.strip())) is not None
    ]
    if len(floors) != 1:
        raise FloorError(f"{requirement!r} must declare exactly one lowest version (>=X)")
    pinned = f"{name}=={floors[0]}"
    return f"{pinned}; {marker.strip()}" if marker.strip() else pinned


def minimum_pins(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    requirements = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise FloorError(f"pyproject.toml has no optional dependency group {extra!r}")
        requirements.extend(optional[extra])
    return [pin(requirement) for requirement in requirements]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument(
        "--extra",
        action="append",
        default=None,
        help="optional dependency group to pin as well (default: fast); repeatable",
    )
    parser.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    try:
        pins = minimum_pins(args.pyproject, ["fast"] if args.extra is None else args.extra)
    except (FloorError, OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        print(f"min_requirements: {exc}", file=sys.stderr)
        return 1
    text = "# Lowest versions allowed by pyproject.toml (written by ci/min_requirements.py)\n"
    text += "".join(f"{line}\n" for line in pins)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
