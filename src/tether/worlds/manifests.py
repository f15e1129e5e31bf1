"""How a worker's manifest may join the one its deployment id was registered with.

A deployment id names one version of the code, so what it registered never
changes: a worker may add workflows and steps the first workers did not
import, but one whose shared entries differ is other code under the same id.
"""

from __future__ import annotations

from typing import Any

#: What a manifest entry records, in the words a conflict is reported in.
_FIELDS = {
    "fingerprint": "code",
    "params": "parameters",
    "returns": "return type",
    "steps": "steps",
}


def conflicts(registered: dict[str, Any], joining: dict[str, Any]) -> list[str]:
    """Each workflow or step both manifests define differently, with what differs in it."""
    found: list[str] = []
    for section in ("workflows", "steps"):
        theirs = registered.get(section, {})
        for name, entry in sorted(joining.get(section, {}).items()):
            was = theirs.get(name)
            if was is None:
                continue
            differ = [shown for key, shown in _FIELDS.items() if was.get(key) != entry.get(key)]
            if differ:
                found.append(f"{name} ({', '.join(differ)})")
    return found


def merged(registered: dict[str, Any], joining: dict[str, Any]) -> dict[str, Any]:
    """``registered`` with the entries of ``joining`` added (and, on a replace, theirs)."""
    result = {section: dict(entries) for section, entries in registered.items()}
    for section, entries in joining.items():
        result.setdefault(section, {}).update(entries)
    return result
