"""What OpenCTI's worker does with one queued bundle.

The worker decodes the message, splits the bundle again, imports every object in dependency order and
reports one expectation per object on the work (with the error when the object was refused).  Objects
are ordered here by resolvability: an object is applied once everything it references is known, so a
bundle pushed whole (``stixBundlePush``, ``no_split``) behaves like the split one.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Dict, List, Optional

from .registry import Registry
from .store import IngestResult, Source, Store, is_stix_id

MAX_REPORTED_SOURCE_LENGTH = 50000


def decode_message(message: Dict[str, Any]) -> Dict[str, Any]:
    """The STIX bundle inside a push-queue message (``content`` is base64 JSON)."""
    content = message.get("content")
    if content is None:
        raise ValueError("push message without content")
    return json.loads(base64.b64decode(content).decode("utf-8"))


def _refs(obj: Dict[str, Any]) -> List[str]:
    refs: List[str] = []
    for key, value in obj.items():
        if key.endswith("_ref") or key.endswith("_refs"):
            refs.extend(v for v in (value if isinstance(value, list) else [value]) if is_stix_id(v))
    return refs


def dependency_order(objects: List[Dict[str, Any]], store: Store) -> List[Dict[str, Any]]:
    """Objects whose references resolve first; leftovers (unresolvable) at the end, in input order."""
    pending = [o for o in objects if isinstance(o, dict)]
    in_bundle = {o.get("id") for o in pending}
    placed: set = set()
    ordered: List[Dict[str, Any]] = []
    progress = True
    while pending and progress:
        progress = False
        remaining = []
        for obj in pending:
            deps = [r for r in _refs(obj) if r != obj.get("id") and r in in_bundle]
            if all(d in placed or store.resolve(d) is not None for d in deps):
                ordered.append(obj)
                placed.add(obj.get("id"))
                progress = True
            else:
                remaining.append(obj)
        pending = remaining
    return ordered + pending


def ingest_bundle(bundle: Dict[str, Any], store: Store, registry: Registry, source: Source,
                  work_id: Optional[str]) -> List[IngestResult]:
    """Import every object of ``bundle``; report each on the work like ``import_item`` does."""
    results: List[IngestResult] = []
    for obj in dependency_order(list(bundle.get("objects") or []), store):
        result = store.ingest(obj, source)
        results.append(result)
        if work_id:
            error = None
            if result.action == "error":
                item = json.dumps(obj)
                error = {"error": str({"name": result.error_code or "FUNCTIONAL_ERROR", "error_message": result.error}),
                         "source": item if len(item) < MAX_REPORTED_SOURCE_LENGTH else "Bundle too large"}
            registry.report_expectation(work_id, error)
    return results
