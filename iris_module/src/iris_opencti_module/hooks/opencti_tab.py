"""The *OpenCTI* tab of an IRIS IOC: OpenCTI's context, rendered from what the enrichment connector wrote.

IRIS's REST API cannot write an IOC's custom attributes (it skips ``html`` fields and unknown tabs, seen on a
real 2.4.20 and 2.5), so the enrichment connector stores OpenCTI's context as plain data in the IOC's
``ioc_enrichment["opencti"]`` (see the connector's ``context.py``), and this module, on the IOC update that write
fires, renders it as an ``html`` custom attribute, as IRIS modules such as the VirusTotal one do. Everything
from OpenCTI is HTML-escaped; the tab is replaced each time, never appended to.
"""

from __future__ import annotations

import html
from typing import Any, Dict, List, Optional

TAB = "OpenCTI"
FIELD = "OpenCTI context"
_TYPE_NAMES = {"Threat-Actor-Group": "Threat actors", "Threat-Actor-Individual": "Threat actors (individuals)",
               "Intrusion-Set": "Intrusion sets", "Malware": "Malware", "Campaign": "Campaigns"}
_CONTAINER_NAMES = {"Report": "Report", "Case-Incident": "Incident case", "Grouping": "Grouping",
                    "Case-Rfi": "Request for information", "Case-Rft": "Request for takedown"}


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def render(context: Dict[str, Any]) -> str:
    """The tab's HTML for ``ioc_enrichment["opencti"]``."""
    rows: List[str] = []
    if context.get("score") is not None:
        rows.append("<tr><th>Score</th><td>{}</td></tr>".format(_e(context["score"])))
    if context.get("tlp"):
        rows.append("<tr><th>TLP</th><td>TLP:{}</td></tr>".format(_e(str(context["tlp"]).upper())))
    labels = [str(label) for label in context.get("labels") or []]
    if labels:
        rows.append("<tr><th>Labels</th><td>{}</td></tr>".format(", ".join(_e(label) for label in labels)))
    for kind, title in _TYPE_NAMES.items():
        names = (context.get("related") or {}).get(kind) or []
        if names:
            rows.append("<tr><th>{}</th><td>{}</td></tr>".format(_e(title), ", ".join(_e(n) for n in names)))
    parts = ["<table class=\"table table-sm\">{}</table>".format("".join(rows))] if rows else []
    containers = [c for c in context.get("containers") or [] if isinstance(c, dict)]
    if containers:
        items = "".join("<li>{}: {}{}</li>".format(_e(_CONTAINER_NAMES.get(str(c.get("type")), c.get("type"))),
                                               _e(c.get("name")), " ({})".format(_e(str(c.get("date"))[:10]))
                                               if c.get("date") else "") for c in containers)
        parts.append(f"<p>In OpenCTI's reports and cases (newest first):</p><ul>{items}</ul>")
    url = context.get("url")
    if isinstance(url, str) and url.lower().startswith(("https://", "http://")):
        parts.append(f"<p><a href=\"{_e(url)}\" target=\"_blank\" rel=\"noopener noreferrer\">Open in OpenCTI</a></p>")
    return "".join(parts) or "<p>OpenCTI knows nothing more about this observable.</p>"


def with_tab(custom_attributes: Any, enrichment: Any) -> Optional[Dict[str, Any]]:
    """The IOC's custom attributes with the OpenCTI tab (re)built from ``enrichment``; None when there is no
    OpenCTI context or the tab already shows exactly it. A new dict, so that IRIS's ORM sees the change."""
    context = enrichment.get("opencti") if isinstance(enrichment, dict) else None
    if not isinstance(context, dict):
        return None
    attributes = dict(custom_attributes) if isinstance(custom_attributes, dict) else {}
    field = {"type": "html", "value": render(context), "mandatory": False}
    if (attributes.get(TAB) or {}).get(FIELD) == field:
        return None
    attributes[TAB] = {FIELD: field}
    return attributes
