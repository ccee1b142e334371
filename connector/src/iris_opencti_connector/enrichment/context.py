"""What OpenCTI knows around an enriched observable, as data for the IOC's OpenCTI tab in IRIS.

IRIS's REST API cannot write an IOC's custom attributes: ``merge_custom_attributes`` skips every field of type
``html`` and every tab the IOC does not already have, and a v2 ``PUT`` with ``custom_attributes`` on an IOC
that has none answers HTTP 500 (all seen on a real 2.4.20 and 2.5). It does store ``ioc_enrichment``, a JSON
field, on both. So the enrichment connector writes this context there, under the key ``opencti``, as plain
data (never HTML), and the IRIS module, whose hook fires on that very update, renders it into the IOC's
*OpenCTI* tab, escaping everything that came from OpenCTI (``iris_opencti_module.hooks.opencti_tab``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

#: the entity types shown as "related", in the tab's order
RELATED_TYPES = ("Threat-Actor-Group", "Threat-Actor-Individual", "Intrusion-Set", "Malware", "Campaign")
#: containers shown (IRIS's own Case-Incidents are left out: the analyst is in one of them)
CONTAINER_TYPES = ("Report", "Case-Incident", "Grouping", "Case-Rfi", "Case-Rft")
#: at most this many of each list, newest first
LIMIT = 20

_NAMED = " ".join(f"... on {t} {{ name }}" for t in ("ThreatActorGroup", "ThreatActorIndividual", "IntrusionSet",
                                                       "Malware", "Campaign"))
CONTEXT_QUERY = f"""
query IrisOpenCTIObservableContext($id: String!) {{
  stixCoreObject(id: $id) {{
    id
    standard_id
    stixCoreRelationships {{ edges {{ node {{ ...IrisRel }} }} }}
    ... on StixCyberObservable {{
      indicators {{ edges {{ node {{ id stixCoreRelationships {{ edges {{ node {{ ...IrisRel }} }} }} }} }} }}
    }}
    containers {{
      edges {{
        node {{
          id
          standard_id
          entity_type
          created
          createdBy {{ id standard_id }}
          externalReferences {{ edges {{ node {{ source_name external_id url }} }} }}
          ... on Report {{ name published }}
          ... on CaseIncident {{ name }}
          ... on Grouping {{ name }}
          ... on CaseRfi {{ name }}
          ... on CaseRft {{ name }}
          ... on Note {{ attribute_abstract content }}
        }}
      }}
    }}
  }}
}}
fragment IrisRel on StixCoreRelationship {{
  relationship_type
  from {{ ... on BasicObject {{ id entity_type }} {_NAMED} }}
  to {{ ... on BasicObject {{ id entity_type }} {_NAMED} }}
}}
"""


def _edges(value: Any) -> List[Dict[str, Any]]:
    return [(e or {}).get("node") or {} for e in ((value or {}).get("edges") or []) if isinstance(e, dict)]


def related_and_containers(obj: Dict[str, Any], iris_author: Optional[str]) -> Dict[str, Any]:
    """``{"related": {type: [names]}, "containers": [{type, name, date}]}`` from the context query's answer.

    Relationships count from the observable and from the indicators based on it (OpenCTI links threat actors
    and malware to indicators more often than to observables); IRIS's own cases (authored by IRIS) are left out.
    """
    related: Dict[str, List[str]] = {}
    seen_ids = {obj.get("id")} | {i.get("id") for i in _edges(obj.get("indicators"))}
    relationships = _edges(obj.get("stixCoreRelationships"))
    for indicator in _edges(obj.get("indicators")):
        relationships += _edges(indicator.get("stixCoreRelationships"))
    for rel in relationships:
        for end in (rel.get("from") or {}, rel.get("to") or {}):
            kind = end.get("entity_type")
            if end.get("id") in seen_ids or kind not in RELATED_TYPES or not end.get("name"):
                continue
            names = related.setdefault(kind, [])
            if end["name"] not in names and len(names) < LIMIT:
                names.append(str(end["name"]))
    containers = []
    for node in _edges(obj.get("containers")):
        kind = node.get("entity_type")
        if kind not in CONTAINER_TYPES or not node.get("name"):
            continue
        if iris_author and (node.get("createdBy") or {}).get("standard_id") == iris_author:
            continue
        containers.append({"type": kind, "name": str(node["name"]),
                           "date": str(node.get("published") or node.get("created") or "")})
    containers.sort(key=lambda c: c["date"], reverse=True)
    return {"related": {k: sorted(v) for k, v in related.items()}, "containers": containers[:LIMIT * 2]}


def observable_url(opencti_url: str, internal_id: Optional[str]) -> Optional[str]:
    """The observable's page in OpenCTI's UI."""
    if not internal_id:
        return None
    return "{}/dashboard/observations/observables/{}".format(opencti_url.rstrip("/"), internal_id)


#: what starts every IRIS comment made from an OpenCTI note: the note's id makes it findable, hence once only
NOTE_MARK = "[OpenCTI note %s]"


def analyst_notes(obj: Dict[str, Any], iris_author: Optional[str]) -> List[Dict[str, str]]:
    """Notes OpenCTI's analysts wrote about the observable (not this connector's: IRIS's own notes come from
    IRIS), oldest first, as ``{"id", "abstract", "content"}``."""
    notes = []
    for node in _edges(obj.get("containers")):
        if node.get("entity_type") != "Note":
            continue
        if iris_author and (node.get("createdBy") or {}).get("standard_id") == iris_author:
            continue
        notes.append({"id": str(node.get("standard_id") or node.get("id")), "date": str(node.get("created") or ""),
                      "abstract": str(node.get("attribute_abstract") or ""), "content": str(node.get("content") or "")})
    notes.sort(key=lambda n: n["date"])
    return notes


def comment_text(note: Dict[str, str]) -> str:
    """The IRIS comment for an OpenCTI note: marked as coming from OpenCTI, plain text."""
    head = NOTE_MARK % note["id"]
    body = "\n\n".join(p for p in (note.get("abstract"), note.get("content")) if p)
    return f"{head} {body}" if body else head
