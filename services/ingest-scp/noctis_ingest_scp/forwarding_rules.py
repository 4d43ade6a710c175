"""Routing rules: which stored instances are forwarded to which remote AEs.

The rules are a JSON file named by ``NOCTIS_FORWARD_RULES_FILE``::

    {
      "rules": [
        {"name": "CT and MR to the router", "destination": "ROUTER",
         "match": {"Modality": ["CT", "MR"], "CallingAETitle": "CT*"}},
        {"name": "everything to the second archive", "destination": "ARCHIVE2"}
      ]
    }

Each rule is checked against the ``instance.stored`` event of every newly stored
instance. ``match`` maps event attributes (:data:`MATCH_KEYS`) to a value or a list of
values. An instance matches when every listed attribute equals one of its values,
case-sensitively, where ``*`` matches any run of characters and ``?`` one character.
A rule without ``match`` takes every instance. The destination is an AE title from
the peer list that has a host and a port. An instance goes to each destination once,
however many rules name it, and never back to the AE that sent it.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from noctis_ingest_scp.peers import PeerDirectory, normalize_ae_title

# Attributes of the instance.stored event payload that rules may match on.
MATCH_KEYS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "Modality",
    "CallingAETitle",
)
RULE_NAME_MAX_LENGTH = 64  # the rule_name column of forward_job


class ForwardRulesError(ValueError):
    """The rules file is missing, not valid JSON, or has an invalid rule."""


@dataclass(frozen=True)
class ForwardRule:
    """One routing rule: forward what ``conditions`` match to ``destination_ae_title``."""

    name: str
    destination_ae_title: str
    # Attribute keyword -> compiled patterns, any of which must match.
    conditions: Mapping[str, tuple[re.Pattern[str], ...]]

    def matches(self, payload: Mapping[str, Any]) -> bool:
        for keyword, patterns in self.conditions.items():
            value = payload.get(keyword)
            text = "" if value is None else str(value)
            if not any(pattern.fullmatch(text) for pattern in patterns):
                return False
        return True


def destinations_for(rules: list[ForwardRule], payload: Mapping[str, Any]) -> dict[str, str]:
    """Return ``{destination AE title: first matching rule name}`` for one stored instance."""
    sender = str(payload.get("CallingAETitle") or "").strip(" ")
    destinations: dict[str, str] = {}
    for rule in rules:
        if rule.destination_ae_title == sender or rule.destination_ae_title in destinations:
            continue
        if rule.matches(payload):
            destinations[rule.destination_ae_title] = rule.name
    return destinations


def load_forward_rules(path: Path, peers: PeerDirectory) -> list[ForwardRule]:
    """Read and check the rules file; raise :class:`ForwardRulesError` on any mistake."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ForwardRulesError(f"cannot read the forwarding rules {path}: {error}") from error
    except json.JSONDecodeError as error:
        raise ForwardRulesError(
            f"the forwarding rules {path} are not valid JSON: {error}"
        ) from error
    if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
        raise ForwardRulesError(
            f'the forwarding rules {path} must be an object with a "rules" list'
        )
    rules = [
        _parse_rule(entry, f"{path}: rule {index + 1}", peers)
        for index, entry in enumerate(document["rules"])
    ]
    names = [rule.name for rule in rules]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ForwardRulesError(f"{path}: rule names must be unique; repeated: {duplicates}")
    return rules


def _parse_rule(entry: object, where: str, peers: PeerDirectory) -> ForwardRule:
    if not isinstance(entry, dict):
        raise ForwardRulesError(f"{where}: each rule must be a JSON object, not {entry!r}")
    unknown_keys = set(entry) - {"name", "destination", "match"}
    if unknown_keys:
        raise ForwardRulesError(f"{where}: unknown keys {sorted(unknown_keys)}")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > RULE_NAME_MAX_LENGTH:
        raise ForwardRulesError(
            f"{where}: name must be a string of 1 to {RULE_NAME_MAX_LENGTH} characters"
        )
    try:
        destination = normalize_ae_title(entry.get("destination"), f"{where} ({name})")
    except ValueError as error:
        raise ForwardRulesError(str(error)) from error
    peer = peers.get(destination)
    if peer is None or peer.address is None:
        raise ForwardRulesError(
            f"{where} ({name}): destination {destination!r} needs an entry with host and "
            "port in NOCTIS_DIMSE_PEERS_FILE"
        )
    return ForwardRule(
        name=name,
        destination_ae_title=destination,
        conditions=_parse_match(entry.get("match", {}), f"{where} ({name})"),
    )


def _parse_match(match: object, where: str) -> dict[str, tuple[re.Pattern[str], ...]]:
    if not isinstance(match, dict):
        raise ForwardRulesError(f"{where}: match must be a JSON object, not {match!r}")
    conditions = {}
    for keyword, expected in match.items():
        if keyword not in MATCH_KEYS:
            raise ForwardRulesError(
                f"{where}: cannot match on {keyword!r}; use any of {', '.join(MATCH_KEYS)}"
            )
        values = [expected] if isinstance(expected, str) else expected
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(value, str) for value in values)
        ):
            raise ForwardRulesError(
                f"{where}: {keyword} must be a string or a non-empty list of strings"
            )
        # fnmatch would also treat '[' as a character set; escape it so only * and ? are special.
        conditions[keyword] = tuple(
            re.compile(fnmatch.translate(value.replace("[", "[[]"))) for value in values
        )
    return conditions
