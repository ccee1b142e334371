"""A small client for IRIS's REST API (what reconcile and the enrichment write-back need).

Retries with backoff on connection errors and 5xx, reports 401/403 as a key problem, and never puts the API
key in an exception or a log line.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional, Union

import requests

LOG = logging.getLogger(__name__)
#: assets asked per page of IRIS 2.5's v2 asset list (its default is 10)
ASSET_PAGE = 100


class IrisError(Exception):
    """IRIS answered with an error or could not be reached (after retries)."""


class IrisAuthError(IrisError):
    """IRIS refused the API key (401) or its user may not access the case (403)."""


class IrisNotFound(IrisError):
    """The case or IOC does not exist (any more) in IRIS."""


class IrisClient:
    def __init__(self, url: str, api_key: str, verify: Union[bool, str] = True, timeout: int = 30, retries: int = 4,
                 backoff: float = 1.0) -> None:
        """``verify`` is ``requests``' own: True, False, or the path of the CA bundle that signed IRIS's certificate
        (``IRIS_VERIFY_SSL=/path/ca.pem``); a bool-only parameter would silently turn a path into "off"."""
        self.url = url.rstrip("/")
        #: whether IRIS has the v2 REST API (2.5+); learned from the first IOC call, since /api/versions on the
        #: 2.5 branch still reports v2.4.x
        self.v2: Optional[bool] = None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.verify = verify
        self.session = requests.Session()
        self.session.verify = verify
        self.session.headers.update({"Authorization": "Bearer " + api_key, "Content-Type": "application/json"})

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One call with retries; returns the response for 2xx and 404, raises otherwise."""
        attempt = 0
        while True:
            try:
                # verify passed per request: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a
                # Session's own verify (psf/requests#3829), which would ignore IRIS_VERIFY_SSL's CA bundle
                response = self.session.request(method, self.url + path, timeout=self.timeout, verify=self.verify,
                                                **kwargs)
            except requests.RequestException as exc:
                problem = f"IRIS unreachable at {self.url}: {type(exc).__name__}"
            else:
                if response.status_code == 401:
                    raise IrisAuthError(f"IRIS refused the API key (HTTP 401 on {method} {path}): check IRIS_API_KEY")
                if response.status_code == 403:
                    raise IrisAuthError(
                        f"IRIS denied access (HTTP 403 on {method} {path}): the key's user lacks access to this case, "
                        "or the "
                        "case no longer exists")
                if response.status_code < 500:
                    return response
                problem = "IRIS answered HTTP %d on %s %s" % (response.status_code, method, path)
            attempt += 1
            if attempt > self.retries:
                raise IrisError(problem)
            delay = self.backoff * (2 ** (attempt - 1))
            LOG.warning("%s; retry %d/%d in %.1fs", problem, attempt, self.retries, delay)
            time.sleep(delay)

    def _data(self, response: requests.Response, what: str) -> Any:
        if response.status_code == 404:
            raise IrisNotFound(f"{what} not found in IRIS")
        try:
            body = response.json()
        except ValueError:
            raise IrisError("IRIS answered non-JSON for %s (HTTP %d)" % (what, response.status_code)) from None
        if isinstance(body, dict) and (body.get("status") == "error" or response.status_code >= 400):
            message = body.get("message") or "error"
            detail = body.get("data")
            if response.status_code == 400 and any(w in str(message).lower() for w in ("invalid", "not found")):
                raise IrisNotFound(f"{what}: {message}")
            raise IrisError("IRIS refused {}: {}{}".format(what, message, f" {detail}" if detail else ""))
        if response.status_code >= 400:
            raise IrisError("IRIS answered HTTP %d for %s" % (response.status_code, what))
        return body.get("data", body) if isinstance(body, dict) and "status" in body else body

    # ------------------------------------------------------------------------------------------ reads
    def versions(self) -> Dict[str, Any]:
        return self._data(self.request("GET", "/api/versions"), "versions")

    def list_cases(self) -> List[Dict[str, Any]]:
        data = self._data(self.request("GET", "/manage/cases/list"), "case list")
        return list(data or [])

    def export_case(self, case_id: Any) -> Dict[str, Any]:
        return self._data(self.request("GET", "/case/export", params={"cid": case_id}), f"case {case_id}")

    def case_assets(self, case_id: Any) -> Optional[List[Dict[str, Any]]]:
        """Every asset of a case through IRIS 2.5's v2 list, page by page; None on an IRIS without v2 (2.4).

        ``/case/export`` (and ``/case/assets/list``) join the analysis status, so they leave out an asset that
        has none, as every asset created through 2.5's v2 API (seen on a real 2.5): a reconcile that trusted
        the export alone would delete such assets from OpenCTI.
        """
        assets: List[Dict[str, Any]] = []
        page = 1
        while True:
            data = self._v2_call("GET", f"/api/v2/cases/{case_id}/assets", f"assets of case {case_id}",
                                 params={"page": page, "per_page": ASSET_PAGE})
            if data is None:
                return None
            rows = data.get("data") if isinstance(data, dict) else None
            if not isinstance(rows, list):
                raise IrisError(f"assets of case {case_id}: IRIS answered no list")
            assets.extend(r for r in rows if isinstance(r, dict))
            if not data.get("next_page") or not rows:
                return assets
            page += 1

    def export_case_whole(self, case_id: Any) -> Dict[str, Any]:
        """The case export, with the assets the export leaves out added from the v2 list (see :meth:`case_assets`)."""
        export = self.export_case(case_id)
        listed = self.case_assets(case_id)
        if listed:
            data = export.get("data", export) if isinstance(export, dict) else export
            exported = data.setdefault("assets", []) if isinstance(data, dict) else []
            have = {str(a.get("asset_id")) for a in exported if isinstance(a, dict)}
            exported.extend(a for a in listed if str(a.get("asset_id")) not in have)
        return export

    def list_iocs(self, case_id: Any) -> List[Dict[str, Any]]:
        data = self._data(self.request("GET", "/case/ioc/list", params={"cid": case_id}), f"IOCs of case {case_id}")
        return list(data.get("ioc", []) if isinstance(data, dict) else data or [])

    def tlps(self) -> Dict[str, int]:
        data = self._data(self.request("GET", "/manage/tlp/list"), "TLP list")
        return {str(t["tlp_name"]).lower(): int(t["tlp_id"]) for t in data or []}

    # ----------------------------------------------------------------------------------------- IOCs
    def _v2_call(self, method: str, path: str, what: str, **kwargs: Any) -> Optional[Any]:
        """Try the v2 route; None when this IRIS has no v2 API (then the caller uses the 2.4 route).

        A missing route answers IRIS's "not found" page, a missing IOC on an existing route an empty 404:
        only the former means "no v2 API".
        """
        if self.v2 is False:
            return None
        response = self.request(method, path, **kwargs)
        if response.status_code == 404 and (self.v2 is None and response.content.strip()):
            self.v2 = False
            return None
        if response.status_code == 404:
            raise IrisNotFound(f"{what} not found in IRIS")
        self.v2 = True
        return self._data(response, what)

    def get_ioc(self, case_id: Any, ioc_id: Any) -> Dict[str, Any]:
        what = f"IOC {ioc_id} of case {case_id}"
        data = self._v2_call("GET", f"/api/v2/cases/{case_id}/iocs/{ioc_id}", what)
        if data is not None:
            return data
        return self._data(self.request("GET", f"/case/ioc/{ioc_id}", params={"cid": case_id}), what)

    def ioc_comments(self, case_id: Any, ioc_id: Any) -> List[Dict[str, Any]]:
        """An IOC's comments (``GET /case/ioc/<id>/comments/list``, the same on 2.4.20 and 2.5)."""
        data = self._data(self.request("GET", f"/case/ioc/{ioc_id}/comments/list", params={"cid": case_id}),
                          f"comments of IOC {ioc_id} in case {case_id}")
        return [c for c in data or [] if isinstance(c, dict)]

    def add_ioc_comment(self, case_id: Any, ioc_id: Any, text: str) -> Any:
        """``POST /case/ioc/<id>/comments/add`` with ``{"comment_text"}`` (the same on 2.4.20 and 2.5)."""
        return self._data(self.request("POST", f"/case/ioc/{ioc_id}/comments/add", params={"cid": case_id},
                                       json={"comment_text": text}),
                          f"comment on IOC {ioc_id} in case {case_id}")

    def update_ioc(self, case_id: Any, ioc_id: Any, changes: Dict[str, Any]) -> Any:
        """IRIS 2.5's v2 route when it exists, else IRIS 2.4's; ``ioc_tags`` replaces the whole string."""
        what = f"update of IOC {ioc_id} in case {case_id}"
        data = self._v2_call("PUT", f"/api/v2/cases/{case_id}/iocs/{ioc_id}", what, json=changes)
        if data is not None:
            return data
        return self._data(self.request("POST", f"/case/ioc/update/{ioc_id}", params={"cid": case_id},
                                       json=changes), what)
