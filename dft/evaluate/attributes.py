"""What an attribute of a label table is: its groups, its target shares, and joint attributes.

Groups matter: a group nobody was assigned to still counts in K, so a model that only ever draws
men scores imbalance 0.5 for gender instead of being skipped as "1 group". They come, first match
wins, from: ``--groups ATTR=a,b`` (or ``evaluate.groups``), the table's own declaration (Parquet
schema metadata ``dft.attributes``, or for CSV the sidecar ``LABELS.csv.groups.json`` that
``dft label`` writes), the known groups below, and last the values seen.

Targets (``evaluate.targets``, ``--target ATTR=GROUP:SHARE,...``) are the shares an attribute
should have; uniform by default. A joint attribute (``evaluate.intersections``, ``--intersect
gender,skin_tone_group``) is named ``gender+skin_tone_group``; its groups are the product of the
parts' groups (``man+lighter``...), an image unreadable in any part is unreadable in the joint, and
its target is the product of the parts' targets unless it has one of its own.
"""

from __future__ import annotations

import itertools
import json

import numpy as np

from dft.errors import DftError
from dft.evaluate.skin_tone import GROUPS, ITA_CLASSES

KNOWN_GROUPS = {
    "skin_tone": [str(i) for i in range(1, 11)],
    "skin_tone_group": list(GROUPS),
    "skin_tone_ita_class": list(ITA_CLASSES),
    "gender": ["man", "woman"],
}
# Known groups that give way to the values seen when a table uses other words (e.g. a reader with
# classes male/female): only the skin-tone scales are fixed by definition.
LENIENT_KNOWN = {"gender"}
JOINT = "+"
SHARE_TOLERANCE = 1e-6
SIDECAR_SUFFIX = ".groups.json"


class LabelTableError(DftError, ValueError):
    """A target, group list or intersection that does not fit the label table."""


def sidecar_uri(labels_uri: str) -> str:
    return str(labels_uri) + SIDECAR_SUFFIX


def sidecar_json(attributes: dict[str, list[str] | None]) -> str:
    return json.dumps({"version": 1, "attributes": attributes}, indent=1) + "\n"


def parse_sidecar(text: str) -> dict[str, list[str] | None]:
    data = json.loads(text)
    attrs = data.get("attributes") if isinstance(data, dict) else None
    if not isinstance(attrs, dict):
        raise LabelTableError("groups sidecar: expected {\"attributes\": {ATTR: [groups...]}}")
    return {str(a): [str(g) for g in gs] if gs else None for a, gs in attrs.items()}


def parse_groups(items: list[str]) -> dict[str, list[str]]:
    """``["gender=man,woman"]`` -> ``{"gender": ["man", "woman"]}`` (``--groups``)."""
    out: dict[str, list[str]] = {}
    for item in items:
        attr, sep, rest = item.partition("=")
        groups = [g.strip() for g in rest.split(",") if g.strip()]
        if not sep or not attr.strip() or len(groups) < 2 or len(set(groups)) != len(groups):
            raise LabelTableError(
                f"--groups {item!r}: expected ATTR=GROUP,GROUP[,...] with at least 2 distinct groups"
            )
        out[attr.strip()] = groups
    return out


def parse_targets(items: list[str]) -> dict[str, dict[str, float]]:
    """``["age=young:0.75,elderly:0.25"]`` -> ``{"age": {"young": 0.75, "elderly": 0.25}}``."""
    out: dict[str, dict[str, float]] = {}
    for item in items:
        attr, sep, rest = item.partition("=")
        shares: dict[str, float] = {}
        ok = bool(sep and attr.strip() and rest.strip())
        for part in rest.split(",") if ok else []:
            group, colon, value = part.rpartition(":")
            try:
                shares[group.strip()] = float(value)
            except ValueError:
                ok = False
            ok = ok and bool(colon and group.strip())
        if not ok:
            raise LabelTableError(f"--target {item!r}: expected ATTR=GROUP:SHARE,GROUP:SHARE (e.g. gender=man:0.5,woman:0.5)")
        check_target(f"--target {attr.strip()}", shares)
        out[attr.strip()] = shares
    return out


def check_target(field: str, shares: dict[str, float], groups: list[str] | None = None) -> None:
    """Shares are non-negative, sum to 1 (within 1e-6), and name only known groups."""
    for g, v in shares.items():
        if not np.isfinite(v) or v < 0:
            raise LabelTableError(f"{field}: share of {g!r} must be a non-negative number; got {v!r}")
    total = float(sum(shares.values()))
    if abs(total - 1.0) > SHARE_TOLERANCE:
        raise LabelTableError(f"{field}: shares must sum to 1 (within {SHARE_TOLERANCE}); got {total:.6g} from {shares}")
    if groups is not None:
        unknown = [g for g in shares if g not in groups]
        if unknown:
            raise LabelTableError(f"{field}: groups {unknown} are not among the attribute's groups {groups}")


def target_vector(
    attr: str, groups: list[str], targets: dict[str, dict[str, float]], parts: dict[str, list[str]] | None = None
) -> np.ndarray | None:
    """Target shares in group order (groups a target leaves out get 0), or None for uniform.

    A joint attribute (``parts``: each part's name and groups, in order) without a target of its own
    gets the product of its parts' targets (uniform for a part without one)."""
    if attr in targets:
        check_target(f"target of {attr}", targets[attr], groups)
        return np.array([float(targets[attr].get(g, 0.0)) for g in groups])
    if parts and any(p in targets for p in parts):
        out = np.ones(1)
        for p, gs in parts.items():
            v = target_vector(p, gs, targets)
            out = np.outer(out, np.full(len(gs), 1.0 / len(gs)) if v is None else v).ravel()
        return out
    return None


def joint_name(parts: list[str]) -> str:
    return JOINT.join(parts)


def joint_codes(codes: list[np.ndarray], groups: list[list[str]]) -> tuple[np.ndarray, list[str]]:
    """Codes of the joint attribute (row-major over the parts) and its groups; -1 if any part is -1."""
    out = np.zeros_like(codes[0])
    bad = np.zeros(codes[0].shape, dtype=bool)
    for c, gs in zip(codes, groups):
        out = out * len(gs) + np.maximum(c, 0)
        bad |= c < 0
    names = [JOINT.join(combo) for combo in itertools.product(*groups)]
    return np.where(bad, -1, out), names


def parse_intersections(items: list[str]) -> list[list[str]]:
    """``["gender,skin_tone_group"]`` -> ``[["gender", "skin_tone_group"]]`` (``--intersect``)."""
    out = []
    for item in items:
        parts = [p.strip() for p in item.split(",") if p.strip()]
        if len(parts) < 2 or len(set(parts)) != len(parts):
            raise LabelTableError(
                f"--intersect {item!r}: expected at least two distinct attribute names, e.g. gender,skin_tone_group"
            )
        out.append(parts)
    return out
