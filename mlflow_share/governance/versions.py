"""Semantic versions of model versions (SemVer 2.0 via ``semver``) and npm-style ranges.

A range is one or more comparators separated by spaces, all of which must hold:
``1.2.3`` (exactly), ``^1.2`` (compatible: same major, or same minor below 1.0), ``~1.2.3``
(same minor), ``>=1.2.0``, ``>1``, ``<2``, ``<=1.4``, ``=1.2.3``, or ``*``. As with npm, a
pre-release (``2.0.0-rc.1``) matches only a range that names a pre-release of the same
major.minor.patch, so ``^1.2`` never picks up someone's release candidate.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import semver

from mlflow_share.errors import InvalidInput

_PARTIAL = re.compile(r"^(0|[1-9]\d*)(?:\.(0|[1-9]\d*|[xX*]))?(?:\.(0|[1-9]\d*|[xX*]))?"
                      r"(?:-([0-9A-Za-z.-]+))?$")
_OPERATOR = re.compile(r"^(\^|~|>=|<=|>|<|=)?\s*(.+)$")
_MAX_LENGTH = 128


def parse(text: object) -> semver.Version:
    """A SemVer 2.0 version, or ``InvalidInput`` naming what is wrong."""
    if not isinstance(text, str) or len(text) > _MAX_LENGTH:
        raise InvalidInput(f"Invalid semantic version {text!r}: expected MAJOR.MINOR.PATCH.")
    try:
        return semver.Version.parse(text)
    except (ValueError, TypeError):
        raise InvalidInput(f"Invalid semantic version {text!r}: expected MAJOR.MINOR.PATCH "
                           "with an optional -pre-release and +build (SemVer 2.0).") from None


@dataclass(frozen=True)
class _Comparator:
    op: str  # one of > >= < <= =
    version: semver.Version
    synthetic: bool = False  # a bound the range implies (``^1`` -> ``<2.0.0-0``), not named

    def holds(self, candidate: semver.Version) -> bool:
        order = candidate.compare(self.version)
        return {">": order > 0, ">=": order >= 0, "<": order < 0, "<=": order <= 0,
                "=": order == 0}[self.op]


@dataclass(frozen=True)
class Range:
    text: str
    comparators: tuple[_Comparator, ...]

    def matches(self, candidate: semver.Version) -> bool:
        if candidate.prerelease and not any(
                c.version.prerelease and not c.synthetic
                and c.version.to_tuple()[:3] == candidate.to_tuple()[:3]
                for c in self.comparators):
            return False
        return all(c.holds(candidate) for c in self.comparators)

    def newest(self, candidates: Iterable[str]) -> str | None:
        """The highest of ``candidates`` (SemVer strings) that matches, or None."""
        best: semver.Version | None = None
        best_text = None
        for text in candidates:
            version = semver.Version.parse(text)
            if self.matches(version) and (best is None or version.compare(best) > 0):
                best, best_text = version, text
        return best_text


def parse_range(text: object) -> Range:
    if not isinstance(text, str) or not text.strip() or len(text) > 256:
        raise InvalidInput(f"Invalid version range {text!r}: e.g. ^1.2, ~1.2.3, >=1.0 <2.")
    comparators: list[_Comparator] = []
    for part in text.split():
        if part in ("*", "x", "X"):
            continue
        match = _OPERATOR.match(part)
        partial = _PARTIAL.match(match.group(2)) if match else None
        if match is None or partial is None:
            raise InvalidInput(f"Invalid version range {text!r}: cannot read {part!r}.")
        comparators.extend(_expand(match.group(1) or "", partial.groups(), text))
    return Range(text, tuple(comparators))


def _expand(op: str, groups: tuple[str | None, ...], text: str) -> list[_Comparator]:
    major_s, minor_s, patch_s, pre = groups
    major = int(major_s or 0)
    minor = None if minor_s in (None, "x", "X", "*") else int(minor_s)  # type: ignore[arg-type]
    patch = None if patch_s in (None, "x", "X", "*") else int(patch_s)  # type: ignore[arg-type]
    if pre and (minor is None or patch is None):
        raise InvalidInput(f"Invalid version range {text!r}: a pre-release needs MAJOR.MINOR.PATCH.")
    low = semver.Version(major, minor or 0, patch or 0, prerelease=pre)

    def between(upper: semver.Version) -> list[_Comparator]:
        # "-0" is the lowest pre-release: the bound excludes the upper release's candidates.
        return [_Comparator(">=", low), _Comparator(
            "<", semver.Version(*upper.to_tuple()[:3], prerelease="0"), synthetic=True)]

    if op == "^":
        if major > 0 or minor is None:
            return between(semver.Version(major + 1, 0, 0))
        if minor > 0 or patch is None:
            return between(semver.Version(0, minor + 1, 0))
        return between(semver.Version(0, 0, patch + 1))
    if op == "~":
        if minor is None:
            return between(semver.Version(major + 1, 0, 0))
        return between(semver.Version(major, minor + 1, 0))
    if op in ("", "="):
        if minor is None:
            return between(semver.Version(major + 1, 0, 0))
        if patch is None:
            return between(semver.Version(major, minor + 1, 0))
        return [_Comparator("=", low)]
    if op in (">", "<="):
        # ">1.2" means above every 1.2.x; "<=1.2" includes every 1.2.x.
        if minor is None:
            bound = semver.Version(major + 1, 0, 0, prerelease="0")
        elif patch is None:
            bound = semver.Version(major, minor + 1, 0, prerelease="0")
        else:
            return [_Comparator(op, low)]
        return [_Comparator(">=" if op == ">" else "<", bound, synthetic=True)]
    if op == "<" and (minor is None or patch is None):
        return [_Comparator("<", semver.Version(major, minor or 0, 0, prerelease="0"),
                            synthetic=True)]
    return [_Comparator(op, low)]
