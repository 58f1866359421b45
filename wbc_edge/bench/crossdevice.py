"""`wbc-edge bench merge`: one table across devices from several results (ours and benchmark_model's).

Rows keep the order of the files given and, within a file, its variant x threads order, so a merged table
reads host by host.  `to_markdown(merge(...))` renders it with Device / Arch / CPU / Backend columns.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence

from .schema import MERGE_KIND, SCHEMA_VERSION, load_result

__all__ = ["merge"]


def merge(results: Sequence[dict | str | os.PathLike]) -> dict:
    """Combine several results (dicts or JSON paths, from any device) into one table: {kind, rows, sources}."""
    rows, sources, notes = [], [], []
    for r in results:
        name = str(r) if not isinstance(r, dict) else "<dict>"
        data = r if isinstance(r, dict) else load_result(r)
        s = data.get("system", {})
        sources.append({"file": name, "device": s.get("device"), "arch": s.get("arch"), "cpu": s.get("cpu"),
                        "source": data.get("source"), "created": data.get("created")})
        rows.extend(data.get("rows", []))
        for v in data.get("variants", []):
            if v.get("parity") is None:
                notes.append(f"{s.get('device')}: {v['name']} has no accuracy numbers "
                             f"({data.get('source')} times random inputs only)")
    return {"schema_version": SCHEMA_VERSION, "kind": MERGE_KIND,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "sources": sources, "rows": rows, "notes": notes}
