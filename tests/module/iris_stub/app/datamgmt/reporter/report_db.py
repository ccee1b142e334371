"""IRIS's ``app/datamgmt/reporter/report_db.py``, reduced to the per-kind case exports the module calls.

In IRIS each function queries its table and returns the rows ``GET /case/export`` shows (the same on 2.4.20
and 2.5); here they return the export-shaped rows a test stored in :data:`RECORDS` (``IrisWorld.record``).
"""

from typing import Any, Dict, List

#: case id -> export section ("notes", "timeline", "tasks", "evidences") -> rows
RECORDS: Dict[int, Dict[str, List[Dict[str, Any]]]] = {}
CALLS: List[str] = []


def _rows(case_id: Any, section: str) -> List[Dict[str, Any]]:
    CALLS.append(section)
    return [dict(row) for row in RECORDS.get(int(case_id), {}).get(section, [])]


def export_case_notes_json(case_id: Any) -> List[Dict[str, Any]]:
    return _rows(case_id, "notes")


def export_case_tm_json(case_id: Any) -> List[Dict[str, Any]]:
    return _rows(case_id, "timeline")


def export_case_tasks_json(case_id: Any) -> List[Dict[str, Any]]:
    return _rows(case_id, "tasks")


def export_case_evidences_json(case_id: Any) -> List[Dict[str, Any]]:
    return _rows(case_id, "evidences")
