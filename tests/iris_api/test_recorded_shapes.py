"""The IRIS API test server against what a real IRIS 2.5 answered (recorded in tests/data/real/)."""

import json
import os

import requests

from tests.iris_api import IrisApiServer

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "real")
KEY = "recorded-shapes-key"


def _load(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as handle:
        return json.load(handle)


def test_v2_asset_list_and_export_agree_with_a_real_2_5():
    """The real 2.5 exported one asset of the two its v2 list shows: the one created through the v2 API has
    no analysis status, and the export's query joins it."""
    export = _load("iris-2.5-case-export-after-deletes.json")
    real = _load("iris-2.5-v2-case-assets-after-deletes.json")
    (v2_only,) = [a for a in real["data"] if a["analysis_status"] is None]
    exported = {a["asset_id"] for a in export["data"]["assets"]}
    assert v2_only["asset_id"] not in exported and len(real["data"]) == len(exported) + 1
    fields = {k: v2_only[k] for k in ("asset_ip", "asset_domain", "asset_description", "asset_uuid", "date_added")}
    with IrisApiServer(mode="2.5", api_keys={KEY: {"id": 1, "user_name": "administrator"}}, seed=[export]) as iris:
        case_id = export["data"]["case"]["case_id"]
        iris.add_asset_v2(case_id, v2_only["asset_name"], asset_type=v2_only["asset_type"]["asset_name"],
                          asset_type_id=v2_only["asset_type_id"], **fields)
        got = requests.get(iris.url + "/api/v2/cases/%d/assets" % case_id,
                           headers={"Authorization": "Bearer " + KEY}, timeout=10).json()
        assert {k: v for k, v in got.items() if k != "data"} == {k: v for k, v in real.items() if k != "data"}
        mine = {a["asset_id"]: a for a in got["data"]}
        for row in real["data"]:
            served = mine[row["asset_id"]]
            for key in ("asset_name", "asset_ip", "asset_domain", "asset_tags", "asset_compromise_status_id",
                        "asset_description", "case_id"):
                assert served[key] == row[key], (row["asset_id"], key, served[key], row[key])
            assert served["asset_type"]["asset_name"] == row["asset_type"]["asset_name"]
            assert (served["analysis_status"] or {}).get("name") == (row["analysis_status"] or {}).get("name")
        assert set(mine[v2_only["asset_id"]]) == set(v2_only), "a v2-created asset has the real row's fields"
        assert v2_only["asset_id"] not in {a["asset_id"] for a in iris.export(case_id)["assets"]}
        second = requests.get(iris.url + "/api/v2/cases/%d/assets" % case_id, params={"per_page": 1, "page": 2},
                              headers={"Authorization": "Bearer " + KEY}, timeout=10).json()
        assert [a["asset_id"] for a in second["data"]] == [v2_only["asset_id"]] and second["next_page"] is None
