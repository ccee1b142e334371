"""The IRIS API test server answers like IRIS 2.4.20 / the 2.5 branch, so client tests against it mean something."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest
import requests

from tests.iris_api import IOC_TAGS_MAX, IrisApiServer

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data"
EXPORTS = {"2.4": DATA / "case_export_2_4_20.json", "2.5": DATA / "case_export_2_5.json"}
KEY = "sync-key"
SYNC_USER = {"id": 7, "user_name": "opencti-sync"}
JSON_HEADERS = {"Content-Type": "application/json"}


def load_export(version: str) -> Dict[str, Any]:
    """A whole real ``/case/export`` answer."""
    return json.loads(EXPORTS[version].read_text(encoding="utf-8"))


def auth(key: str = KEY) -> Dict[str, str]:
    """Headers as the connector's client sends them."""
    return {"Authorization": "Bearer " + key, **JSON_HEADERS}


@pytest.fixture
def make_server() -> Iterator[Callable[..., IrisApiServer]]:
    """Start servers (seeded by default with the real export of their mode); all stopped at the end."""
    started: List[IrisApiServer] = []

    def make(mode: str = "2.4", seed: Any = None, keys: Any = None, **kwargs: Any) -> IrisApiServer:
        server = IrisApiServer(mode, keys or {KEY: SYNC_USER}, [load_export(mode)] if seed is None else seed,
                               **kwargs)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def case_and_ioc(mode: str) -> Dict[str, int]:
    """Ids of the seeded case and of its first IOC (192.0.2.45, ip-dst, amber, tags 'phishing')."""
    data = load_export(mode)["data"]
    return {"cid": data["case"]["case_id"], "ioc": data["iocs"][0]["ioc_id"]}


MODES = pytest.mark.parametrize("mode", ["2.4", "2.5"])


# -- versions, ping, seeding ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,iris_current", [("2.4", "v2.4.20"), ("2.5", "v2.4.18")])
def test_versions_are_the_real_strings_of_each_mode(make_server, mode, iris_current):
    server = make_server(mode)
    body = requests.get(server.url + "/api/versions", headers=auth(), timeout=5).json()
    assert body == {"status": "success", "message": "",
                    "data": {"iris_current": iris_current, "api_min": "2.0.4", "api_current": "2.0.5"}}
    ping = requests.get(server.url + "/api/ping", headers=auth(), timeout=5).json()
    assert ping == {"status": "success", "message": "pong", "data": []}


@MODES
@pytest.mark.parametrize("export_version", ["2.4", "2.5"])
def test_seeding_from_either_real_export_in_either_mode(make_server, mode, export_version):
    export = load_export(export_version)
    server = make_server(mode, seed=[export])
    cid = export["data"]["case"]["case_id"]
    got = requests.get(server.url + "/case/export", params={"cid": cid}, headers=auth(), timeout=5).json()
    assert got["status"] == "success"
    data = got["data"]
    assert list(data) == ["case", "evidences", "timeline", "iocs", "assets", "tasks", "comments", "notes",
                          "export_date"]
    assert data["case"] == export["data"]["case"] and data["assets"] == export["data"]["assets"]
    expected = copy.deepcopy(export["data"]["iocs"])
    for ioc in expected:  # 2.4 IOCs have no case_id; 2.5 ones do
        ioc.pop("case_id", None)
        if mode == "2.5":
            ioc["case_id"] = cid
    assert data["iocs"] == expected
    assert server.iocs(cid) == expected


@MODES
def test_both_exports_in_one_server(make_server, mode):
    server = make_server(mode, seed=[load_export("2.4"), load_export("2.5")])
    assert server.cases() == [4, 10]
    rows = requests.get(server.url + "/manage/cases/list", headers=auth(), timeout=5).json()["data"]
    assert [r["case_id"] for r in rows] == [4, 10]
    assert rows[0]["case_name"] == "#4 - Ransomware precursor on build server"
    assert rows[0]["case_open_date"] == "11/28/2026" and rows[0]["access_level"] == 4
    assert rows[0]["client_name"] == "ProbeCustomer" and rows[0]["state_name"] == "Open"


def test_duplicate_case_seed_is_refused():
    with pytest.raises(ValueError):
        IrisApiServer("2.4", seed=[load_export("2.4"), load_export("2.4")])


# -- legacy (2.4) IOC routes, both modes -----------------------------------------------------------------------
@MODES
def test_ioc_list_has_the_real_row_shape(make_server, mode):
    server = make_server(mode)
    ids = case_and_ioc(mode)
    body = requests.get(server.url + "/case/ioc/list", params={"cid": ids["cid"]}, headers=auth(), timeout=5).json()
    rows = body["data"]["ioc"]
    assert len(rows) == 15
    assert set(rows[0]) == {"ioc_id", "ioc_uuid", "ioc_value", "ioc_type_id", "ioc_type", "ioc_description",
                            "ioc_tags", "ioc_misp", "tlp_name", "tlp_bscolor", "ioc_tlp_id", "link", "misp_link"}
    assert [r["ioc_type"] for r in rows] == sorted(r["ioc_type"] for r in rows)  # type *names*, ordered
    first = next(r for r in rows if r["ioc_id"] == ids["ioc"])
    assert (first["ioc_type"], first["tlp_name"], first["tlp_bscolor"]) == ("ip-dst", "amber", "warning")
    assert set(body["data"]["state"]) == {"object_state", "object_last_update"}


@MODES
def test_get_update_round_trip(make_server, mode):
    server = make_server(mode)
    ids = case_and_ioc(mode)
    url = f"{server.url}/case/ioc/{ids['ioc']}"
    before = requests.get(url, params={"cid": ids["cid"]}, headers=auth(), timeout=5).json()["data"]
    assert before["ioc_tags"] == "phishing" and before["user_id"] == 1
    changes = {"ioc_tags": "opencti:score=80", "ioc_tlp_id": 1, "ioc_description": "seen by OpenCTI"}
    answer = requests.post(f"{server.url}/case/ioc/update/{ids['ioc']}", params={"cid": ids["cid"]},
                           json=changes, headers=auth(), timeout=5)
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "success" and body["message"] == 'Updated ioc "192.0.2.45"'
    updated = body["data"]
    assert updated["ioc_tags"] == "opencti:score=80"  # replaced, not merged
    assert (updated["ioc_tlp_id"], updated["ioc_description"], updated["user_id"]) == (1, "seen by OpenCTI", 7)
    assert updated == {**before, **changes, "user_id": 7}
    assert requests.get(url, params={"cid": ids["cid"]}, headers=auth(), timeout=5).json()["data"] == updated
    assert server.ioc(ids["ioc"]) == updated
    logged = server.requests_to("POST", "/case/ioc/update")
    assert logged[0]["json"] == changes and logged[0]["user"] == "opencti-sync" and logged[0]["user_id"] == 7
    assert logged[0]["query"] == {"cid": str(ids["cid"])}
    assert KEY not in json.dumps(server.requests)


@MODES
def test_ioc_tags_limit_is_512_characters(make_server, mode):
    server = make_server(mode)
    ids = case_and_ioc(mode)
    url = f"{server.url}/case/ioc/update/{ids['ioc']}"
    exact = "t" * IOC_TAGS_MAX
    assert requests.post(url, params={"cid": ids["cid"]}, json={"ioc_tags": exact}, headers=auth(),
                         timeout=5).status_code == 200
    answer = requests.post(url, params={"cid": ids["cid"]}, json={"ioc_tags": exact + "x", "ioc_tlp_id": 1},
                           headers=auth(), timeout=5)
    assert answer.status_code == 400
    assert answer.json() == {"status": "error", "message": "Data error",
                             "data": {"ioc_tags": ["Longer than maximum length 512."]}}
    assert server.ioc(ids["ioc"])["ioc_tags"] == exact and server.ioc(ids["ioc"])["ioc_tlp_id"] == 2


@MODES
def test_other_update_validation(make_server, mode):
    server = make_server(mode)
    ids = case_and_ioc(mode)
    url = f"{server.url}/case/ioc/update/{ids['ioc']}"

    def post(body: Any, **kwargs: Any) -> requests.Response:
        return requests.post(url, params={"cid": ids["cid"]}, json=body, headers=auth(), timeout=5, **kwargs)

    assert post({"ioc_type_id": 123456789}).json()["data"] == {"ioc_type_id": ["Invalid IOC type ID"]}
    assert post({"ioc_value": ""}).json()["data"] == {"ioc_value": ["Shorter than minimum length 1."]}
    assert post({"ioc_tlp_id": 99}).status_code == 500  # foreign key violation, unserialisable error
    assert post({"ioc_tags": ["a", "b"]}).status_code == 500  # verify_data calls .split on it
    assert "split" in server.requests[-1]["error"]
    assert post({"ioc_type_id": 20, "unknown": 1}).json()["data"]["ioc_type"]["type_name"] == "domain"
    assert post({"ioc_tlp_id": None}).json()["data"]["ioc_tlp_id"] is None
    text = requests.post(url, params={"cid": ids["cid"]}, data="ioc_tags=x", timeout=5,
                         headers={"Authorization": "Bearer " + KEY, "Content-Type": "text/plain"})
    assert text.status_code == 415


def test_legacy_ioc_of_another_case_2_4(make_server):
    server = make_server("2.4", seed=[load_export("2.4"), load_export("2.5")])
    url = server.url + "/case/ioc/5"  # IOC 5 is in case 4, not 10
    wrong = requests.get(url, params={"cid": 10}, headers=auth(), timeout=5)
    assert (wrong.status_code, wrong.json()["message"]) == (400, "Invalid IOC ID for this case")
    update = requests.post(server.url + "/case/ioc/update/5", params={"cid": 10}, json={"ioc_tags": "x"},
                           headers=auth(), timeout=5)
    assert update.status_code == 500 and "Invalid IOC ID for this case" in server.requests[-1]["error"]
    assert server.ioc(5)["ioc_tags"] == "phishing"


def test_legacy_ioc_of_another_case_2_5(make_server):
    server = make_server("2.5", seed=[load_export("2.4"), load_export("2.5")])
    other = requests.get(server.url + "/case/ioc/5", params={"cid": 10}, headers=auth(), timeout=5)
    assert other.status_code == 200 and other.json()["data"]["case_id"] == 4  # 2.5 ignores the cid here
    assert other.headers["Deprecation"] == "True"
    missing = requests.get(server.url + "/case/ioc/999", params={"cid": 4}, headers=auth(), timeout=5)
    assert (missing.status_code, missing.json()["message"]) == (400, "Invalid IOC identifier")
    update = requests.post(server.url + "/case/ioc/update/999", params={"cid": 4}, json={"ioc_tags": "x"},
                           headers=auth(), timeout=5)
    assert update.status_code == 400 and update.json() == {"status": "error", "message": "Object not found",
                                                           "data": []}


def test_2_4_shared_ioc_shows_in_both_cases(make_server):
    server = make_server("2.4")
    server.add_case(case_id=11, name="Second case")
    assert server.add_ioc(11, "192.0.2.45", "ip-dst") == 29  # same value and type: IRIS links the existing IOC
    requests.post(server.url + "/case/ioc/update/29", params={"cid": 11}, json={"ioc_tags": "shared"},
                  headers=auth(), timeout=5)
    assert server.iocs(10)[0]["ioc_tags"] == "shared"
    rows = requests.get(server.url + "/case/ioc/list", params={"cid": 10}, headers=auth(), timeout=5).json()
    row = next(r for r in rows["data"]["ioc"] if r["ioc_id"] == 29)
    assert row["link"] == [{"case_id": 11, "case_name": "#11 - Second case", "client_name": "IrisTestCustomer"}]


# -- authentication and permissions ----------------------------------------------------------------------------
@MODES
def test_missing_or_unknown_key(make_server, mode):
    server = make_server(mode)
    cid = case_and_ioc(mode)["cid"]
    for headers in (JSON_HEADERS, auth("wrong")):
        for path in ("/api/versions", "/manage/tlp/list", "/manage/cases/list"):
            answer = requests.get(server.url + path, headers=headers, timeout=5)
            assert answer.status_code == 401
            assert answer.json() == {"status": "error", "message": "Authentication required", "data": []}
        legacy = requests.get(server.url + "/case/ioc/list", params={"cid": cid}, headers=headers, timeout=5)
        if mode == "2.4":
            assert legacy.status_code == 401
        else:  # 2.5 checks the case before the key on its legacy routes
            assert legacy.status_code == 403 and legacy.json()["data"]["user_id"] == "Anonymous"
    assert all(r["user"] is None for r in server.requests)


@MODES
def test_key_forms_accepted_like_iris(make_server, mode):
    server = make_server(mode)
    for headers in ({"Authorization": KEY}, {"X-IRIS-AUTH": "Bearer " + KEY}):
        assert requests.get(server.url + "/api/ping", headers=headers, timeout=5).status_code == 200


@MODES
def test_permissions(make_server, mode):
    keys = {KEY: SYNC_USER, "reader": {"id": 8, "user_name": "reader", "access": "read"},
            "nobody": {"id": 9, "user_name": "nobody", "access": "none", "standard_user": False},
            "inactive": {"id": 10, "user_name": "gone", "active": False}}
    server = make_server(mode, keys=keys)
    ids = case_and_ioc(mode)
    params = {"cid": ids["cid"]}
    list_url = server.url + "/case/ioc/list"
    update_url = f"{server.url}/case/ioc/update/{ids['ioc']}"
    assert requests.get(list_url, params=params, headers=auth("reader"), timeout=5).status_code == 200
    denied = requests.post(update_url, params=params, json={"ioc_tags": "x"}, headers=auth("reader"), timeout=5)
    assert denied.status_code == 403
    assert denied.json()["message"] == "Permission denied"
    assert {k: denied.json()["data"][k] for k in ("user_id", "case_id")} == {"user_id": 8, "case_id": ids["cid"]}
    assert requests.get(list_url, params=params, headers=auth("nobody"), timeout=5).status_code == 403
    assert requests.get(server.url + "/manage/cases/list", headers=auth("nobody"), timeout=5).status_code == 403
    assert requests.get(server.url + "/api/ping", headers=auth("inactive"), timeout=5).status_code == 401
    unknown_case = requests.get(list_url, params={"cid": 999}, headers=auth(), timeout=5)
    assert unknown_case.status_code == 403  # no access row exists for a case that does not exist
    server.add_api_key("late", {"id": 11, "user_name": "late", "case_access": {ids["cid"]: "none"}})
    assert requests.get(list_url, params=params, headers=auth("late"), timeout=5).status_code == 403
    server.remove_api_key(KEY)
    assert requests.get(server.url + "/api/ping", headers=auth(), timeout=5).status_code == 401


def test_unknown_case_with_an_administrator_session_2_4(make_server):
    server = make_server("2.4", keys={KEY: SYNC_USER, "admin": {"id": 1, "user_name": "administrator",
                                                                 "administrator": True}})
    assert requests.get(server.url + "/case/export", params={"cid": 999}, headers=auth("admin"),
                        timeout=5).status_code == 403  # no session cookie yet
    with requests.Session() as session:
        session.headers.update(auth("admin"))
        assert "session=" in session.get(server.url + "/api/versions", timeout=5).headers["Set-Cookie"]
        known = session.get(server.url + "/case/ioc/list", params={"cid": 10}, timeout=5)
        assert known.status_code == 200 and "Set-Cookie" not in known.headers
        unknown = session.get(server.url + "/case/export", params={"cid": 999}, timeout=5)
        assert unknown.status_code == 404 and unknown.json()["message"] == "Invalid case ID"
    with requests.Session() as session:  # a non-administrator's session changes nothing
        session.headers.update(auth())
        session.get(server.url + "/api/versions", timeout=5)
        assert session.get(server.url + "/case/export", params={"cid": 999}, timeout=5).status_code == 403


def test_unknown_case_with_an_administrator_session_2_5(make_server):
    server = make_server("2.5", keys={KEY: SYNC_USER, "admin": {"id": 1, "user_name": "administrator",
                                                                 "administrator": True}})
    server.add_case(case_id=1, name="Initial case")
    v2 = requests.get(server.url + "/api/v2/cases/999/iocs", headers=auth("admin"), timeout=5)
    assert v2.status_code == 200 and v2.json()["total"] == 0
    assert requests.get(server.url + "/api/v2/cases/999/iocs", headers=auth(), timeout=5).status_code == 403
    with requests.Session() as session:
        session.headers.update(auth("admin"))
        session.get(server.url + "/case/ioc/list", params={"cid": 4}, timeout=5)  # 2.5 legacy routes set it too
        export = session.get(server.url + "/case/export", params={"cid": 999}, timeout=5).json()["data"]
        assert export["case"]["case_id"] == 1  # IRIS falls back to case 1


# -- v2 API ------------------------------------------------------------------------------------------------------
def test_v2_routes_are_404_in_2_4_mode(make_server):
    server = make_server("2.4")
    for method in ("GET", "PUT"):
        answer = requests.request(method, server.url + "/api/v2/cases/10/iocs/29", json={"ioc_tags": "x"},
                                  headers=auth(), timeout=5)
        assert answer.status_code == 404
        assert answer.json() == {"status": "error", "message": "Resource not found", "data": []}
    html = requests.get(server.url + "/api/v2/cases/10/iocs", headers={"Authorization": "Bearer " + KEY},
                        timeout=5)
    assert html.status_code == 404 and html.headers["Content-Type"].startswith("text/html")
    assert server.ioc(29)["ioc_tags"] == "phishing"


def test_v2_get_put_without_envelope(make_server):
    server = make_server("2.5")
    url = server.url + "/api/v2/cases/4/iocs/5"
    got = requests.get(url, headers=auth(), timeout=5).json()
    assert "status" not in got and got["ioc_id"] == 5 and got["case_id"] == 4
    assert requests.get(url, headers=auth(), timeout=5).headers["Access-Control-Allow-Origin"] == "*"
    assert got["tlp"] == {"tlp_id": 2, "tlp_name": "amber", "tlp_bscolor": "warning"} and got["link"] == []
    put = requests.put(url, json={"ioc_tags": "phishing,opencti:score=80", "ioc_tlp_id": 1}, headers=auth(),
                       timeout=5)
    assert put.status_code == 200
    assert put.json()["ioc_tags"] == "phishing,opencti:score=80" and put.json()["tlp"]["tlp_name"] == "red"
    assert put.json()["user_id"] == 7 and server.ioc(5)["user_id"] == 7
    too_long = requests.put(url, json={"ioc_tags": "t" * 513}, headers=auth(), timeout=5)
    assert too_long.status_code == 400
    assert too_long.json() == {"message": "Data error", "data": {"ioc_tags": ["Longer than maximum length 512."]}}
    missing = requests.get(server.url + "/api/v2/cases/4/iocs/999", headers=auth(), timeout=5)
    assert missing.status_code == 404 and missing.content == b""
    assert requests.put(server.url + "/api/v2/cases/4/iocs/999", json={}, headers=auth(),
                        timeout=5).status_code == 404
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(server.url + "/api/v2/iocs/5", headers=auth(), timeout=5).json()["ioc_id"] == 5


def test_v2_ioc_in_another_case_and_links(make_server):
    server = make_server("2.5")
    server.add_case(case_id=5, name="Other")
    new_id = server.add_ioc(5, "192.0.2.45", "ip-dst")
    assert new_id != 5  # 2.5: another case means another IOC
    assert requests.get(server.url + f"/api/v2/cases/4/iocs/{new_id}", headers=auth(), timeout=5).status_code == 404
    got = requests.get(server.url + "/api/v2/cases/4/iocs/5", headers=auth(), timeout=5).json()
    assert got["link"] == [{"case_id": 5, "case_name": "#5 - Other", "client_name": "IrisTestCustomer"}]
    with pytest.raises(ValueError):
        server.add_ioc(5, "192.0.2.45", "ip-dst")


def test_v2_list_paginates_like_iris(make_server):
    server = make_server("2.5")
    page = requests.get(server.url + "/api/v2/cases/4/iocs", params={"per_page": 4, "page": 2}, headers=auth(),
                        timeout=5).json()
    assert (page["total"], page["last_page"], page["current_page"], page["next_page"]) == (15, 4, 2, True)
    assert [i["ioc_id"] for i in page["data"]] == [9, 10, 11, 12]
    last = requests.get(server.url + "/api/v2/cases/4/iocs", params={"per_page": 10, "page": 2}, headers=auth(),
                        timeout=5).json()
    assert len(last["data"]) == 5 and last["next_page"] is None
    filtered = requests.get(server.url + "/api/v2/cases/4/iocs", params={"ioc_value": "192.0.2.45"},
                            headers=auth(), timeout=5).json()
    assert [i["ioc_id"] for i in filtered["data"]] == [5]
    assert requests.get(server.url + "/api/v2/cases/999/iocs", headers=auth(), timeout=5).status_code == 403


def test_tlp_list(make_server):
    server = make_server("2.4", tlps=[(11, "clear", "black"), (12, "amber", "warning")])
    data = requests.get(server.url + "/manage/tlp/list", headers=auth(), timeout=5).json()["data"]
    assert {t["tlp_name"]: t["tlp_id"] for t in data} == {"clear": 11, "amber": 12}
    default = make_server("2.5")
    names = [t["tlp_name"] for t in requests.get(default.url + "/manage/tlp/list", headers=auth(),
                                                 timeout=5).json()["data"]]
    assert names == ["red", "amber", "green", "clear", "amber+strict"]


def test_wrong_method_is_405(make_server):
    server = make_server("2.4")
    answer = requests.get(server.url + "/case/ioc/update/29", params={"cid": 10}, headers=auth(), timeout=5)
    assert answer.status_code == 405 and "POST" in answer.headers["Allow"]


# -- faults, down/up ------------------------------------------------------------------------------------------
@MODES
def test_fail_next(make_server, mode):
    server = make_server(mode)
    server.fail_next(2, status=503)
    statuses = [requests.get(server.url + "/api/ping", headers=auth(), timeout=5).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert [r["fault"] for r in server.requests] == [True, True, False]
    server.fail_next(1, status=500, match="POST /case/ioc/update")
    assert requests.get(server.url + "/api/ping", headers=auth(), timeout=5).status_code == 200
    ids = case_and_ioc(mode)
    update = requests.post(f"{server.url}/case/ioc/update/{ids['ioc']}", params={"cid": ids["cid"]},
                           json={"ioc_tags": "x"}, headers=auth(), timeout=5)
    assert update.status_code == 500 and server.ioc(ids["ioc"])["ioc_tags"] == "phishing"
    server.fail_next(1, status=0)
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/api/ping", headers=auth(), timeout=5)


def test_fail_for_and_delay(make_server):
    server = make_server("2.4")
    server.fail_for(0.3, status=502)
    assert requests.get(server.url + "/api/ping", headers=auth(), timeout=5).status_code == 502
    time.sleep(0.35)
    assert requests.get(server.url + "/api/ping", headers=auth(), timeout=5).status_code == 200
    server.delay(0.5, match="/api/versions")
    with pytest.raises(requests.Timeout):
        requests.get(server.url + "/api/versions", headers=auth(), timeout=0.2)
    server.reset(state=False)
    assert server.faults.describe() == {"failures": [], "delays": []} and server.requests == []


@MODES
def test_down_then_up_on_the_same_port(make_server, mode):
    server = make_server(mode)
    url = server.url
    server.down()
    assert not server.is_up
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/api/ping", headers=auth(), timeout=2)
    server.up()
    assert server.url == url
    assert requests.get(url + "/api/ping", headers=auth(), timeout=5).status_code == 200
    server.down(seconds=0.3)
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/api/ping", headers=auth(), timeout=2)
    assert server.wait_for(lambda: server.is_up, timeout=3)
    assert requests.get(url + "/api/ping", headers=auth(), timeout=5).status_code == 200
    server.down(seconds=0.1)
    server.stop()  # a pending automatic up must not reopen a stopped server
    time.sleep(0.25)
    assert not server.is_up


def test_reset_restores_the_seed_and_wait_for(make_server):
    server = make_server("2.4")
    server.edit_ioc(29, ioc_tags="edited by an analyst")
    server.delete_ioc(30)
    assert server.ioc(30) is None and server.ioc(29)["ioc_tags"] == "edited by an analyst"
    server.reset()
    assert server.ioc(30) is not None and server.ioc(29)["ioc_tags"] == "phishing"
    assert not server.wait_for(lambda: bool(server.requests), timeout=0.1)


# -- the project's own client against both modes -------------------------------------------------------------
@MODES
def test_connector_client_round_trip(make_server, mode):
    client_module = pytest.importorskip("iris_opencti_connector.iris_client")
    server = make_server(mode)
    ids = case_and_ioc(mode)
    client = client_module.IrisClient(server.url, KEY, retries=0)
    assert client.tlps()["amber"] == 2
    assert len(client.list_iocs(ids["cid"])) == 15
    client.update_ioc(ids["cid"], ids["ioc"], {"ioc_tags": "phishing,opencti:score=80"})
    assert client.get_ioc(ids["cid"], ids["ioc"])["ioc_tags"] == "phishing,opencti:score=80"
    v2_calls = server.requests_to("PUT", "/api/v2/")
    assert len(v2_calls) == 1 and v2_calls[0]["status"] == (404 if mode == "2.4" else 200)


# -- as a separate process -------------------------------------------------------------------------------------
def test_runs_as_a_process_with_control_api():
    command = [sys.executable, "-m", "tests.iris_api", "--mode", "2.5", "--port", "0", "--key", KEY,
               "--seed", str(EXPORTS["2.5"])]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), process.stderr.read()
        versions = requests.get(url + "/api/versions", headers=auth(), timeout=5).json()["data"]
        assert versions["iris_current"] == "v2.4.18"
        assert requests.put(url + "/api/v2/cases/4/iocs/5", json={"ioc_tags": "x"}, headers=auth(),
                            timeout=5).status_code == 200
        state = requests.get(url + "/_test/state", timeout=5).json()
        assert state["mode"] == "2.5" and state["iocs"]["5"]["ioc_tags"] == "x" and state["links"]["5"] == [4]
        logged = requests.get(url + "/_test/requests", params={"method": "PUT"}, timeout=5).json()
        assert [r["json"] for r in logged] == [{"ioc_tags": "x"}]
        assert requests.post(url + "/_test/fail", json={"n": 1, "status": 500}, timeout=5).json() == {"ok": True}
        assert requests.get(url + "/api/ping", headers=auth(), timeout=5).status_code == 500
        added = requests.post(url + "/_test/ioc", json={"case_id": 4, "ioc_value": "evil.example", "ioc_type":
                                                        "domain"}, timeout=5).json()
        assert added["ioc_type"]["type_id"] == 20 and added["case_id"] == 4
        requests.post(url + "/_test/reset", json={}, timeout=5)
        assert requests.get(url + "/_test/ioc", params={"id": 5}, timeout=5).json()["ioc_tags"] == "phishing"
        assert requests.post(url + "/_test/down", json={"seconds": 0.3}, timeout=5).status_code == 200
        with pytest.raises(requests.ConnectionError):
            requests.get(url + "/api/ping", headers=auth(), timeout=2)
        deadline = time.monotonic() + 5
        while True:
            try:
                assert requests.get(url + "/api/ping", headers=auth(), timeout=2).status_code == 200
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "server did not come back up"
                time.sleep(0.05)
        assert requests.get(url + "/_test/nope", timeout=5).status_code == 404
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == 0
