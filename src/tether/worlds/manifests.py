"""How a worker's manifest may join the one its deployment id was registered with.

A deployment id names one version of the code, so what it registered never
changes: a worker may add workflows and steps the first workers did not
import, but one whose shared entries differ is other code under the same id.
"""

from __future__ import annotations

from typing import Any

#: What a manifest entry records, in the words a change is reported in.
FIELDS = {
    "fingerprint": "code",
    "params": "parameters",
    "returns": "return type",
    "steps": "steps",
}


def conflicts(registered: dict[str, Any], joining: dict[str, Any]) -> list[str]:
    """Each workflow or step both manifests define differently, with what differs in it.

    Code is compared only when both were compiled by one Python version (or
    the registered entry predates the record of it): the same source has
    other bytecode under another Python, and a fleet upgrades one at a time.
    """
    found: list[str] = []
    for section in ("workflows", "steps"):
        theirs = registered.get(section, {})
        for name, entry in sorted(joining.get(section, {}).items()):
            was = theirs.get(name)
            if was is None:
                continue
            fields = dict(FIELDS)
            if "python" in was and was["python"] != entry.get("python"):
                del fields["fingerprint"]
            differ = [shown for key, shown in fields.items() if was.get(key) != entry.get(key)]
            if differ:
                found.append(f"{name} ({', '.join(differ)})")
    return found


def merged(
    registered: dict[str, Any], joining: dict[str, Any], *, replace: bool = False
) -> dict[str, Any]:
    """``registered`` plus the names only ``joining`` defines; with ``replace``, all of its."""
    result = {section: dict(entries) for section, entries in registered.items()}
    for section, entries in joining.items():
        into = result.setdefault(section, {})
        for name, entry in entries.items():
            if replace or name not in into:
                into[name] = entry
    return result
