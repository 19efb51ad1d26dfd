"""Upload the generated dashboards to Grafana with grafana-client.

grafana-client (grafana-toolbox/grafana-client) is the maintained fork of grafana-api
(m0nhawk/grafana_api, archived, last release 1.0.3 in 2020, pre-Grafana 9): it follows the
current folder/dashboard API (``folderUid`` rather than the deprecated ``folderId``), is
verified against Grafana 12/13, and raises typed errors (``GrafanaClientError``,
``GrafanaTimeoutError``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

from grafana_client.api import GrafanaApi

from monitor import __version__

from .definitions import all_dashboards
from .kit import JSON, Dashboard, title_of, to_json, uid_of

DEFAULT_FOLDER = "telesafe"


@dataclass(frozen=True)
class PushResult:
    uid: str
    title: str
    url: str
    version: int | None
    status: str


def folder_uid_for(title: str) -> str:
    """A stable folder uid from its title (Grafana uids: ≤ 40 chars of [a-zA-Z0-9_-])."""
    uid = re.sub(r"[^a-zA-Z0-9_-]+", "-", title.strip().lower()).strip("-")
    return (uid or "telesafe")[:40]


def connect(url: str, token: str | None, timeout: float = 10.0) -> GrafanaApi:
    """``token`` is a service-account token (Bearer); without one, user:password in the URL."""
    return cast(GrafanaApi, GrafanaApi.from_url(url, credential=token or None, timeout=timeout))


def _untyped(api: GrafanaApi) -> Any:
    """grafana-client's element methods carry no annotations; call them through ``Any``."""
    return api


def ensure_folder(api: GrafanaApi, title: str) -> str:
    """Find the folder by uid or title, or create it; returns its uid."""
    wanted_uid = folder_uid_for(title)
    folders: list[dict[str, Any]] = _untyped(api).folder.get_all_folders() or []
    for f in folders:
        if f.get("uid") == wanted_uid or f.get("title") == title:
            return str(f["uid"])
    created: dict[str, Any] = _untyped(api).folder.create_folder(title=title, uid=wanted_uid)
    return str(created.get("uid", wanted_uid))


def upload_payload(dashboard: JSON, folder_uid: str) -> JSON:
    body = dict(dashboard)
    body["id"] = None  # let Grafana match on uid; overwrite replaces any version
    return {
        "dashboard": body,
        "folderUid": folder_uid,
        "overwrite": True,
        "message": f"telesafe {__version__}: dashboards push",
    }


def push(
    url: str,
    token: str | None,
    folder: str = DEFAULT_FOLDER,
    dashboards: list[Dashboard] | None = None,
    api: GrafanaApi | None = None,
) -> list[PushResult]:
    """Create/find ``folder`` and upload (overwrite) every dashboard into it."""
    api = api or connect(url, token)
    folder_uid = ensure_folder(api, folder)
    results = []
    for d in dashboards if dashboards is not None else all_dashboards():
        payload = upload_payload(to_json(d), folder_uid)
        resp: dict[str, Any] = _untyped(api).dashboard.update_dashboard(payload)
        version = resp.get("version")
        results.append(
            PushResult(
                uid=str(resp.get("uid", uid_of(d))),
                title=title_of(d),
                url=str(resp.get("url", "")),
                version=int(version) if version is not None else None,
                status=str(resp.get("status", "")),
            )
        )
    # Read back: every dashboard must now be listed in the folder.
    found: list[dict[str, Any]] = (
        _untyped(api).search.search_dashboards(type_="dash-db", folder_uids=[folder_uid]) or []
    )
    present = {str(h.get("uid")) for h in found}
    missing = [r.uid for r in results if r.uid not in present]
    if missing:
        raise RuntimeError(f"dashboards not found in folder {folder_uid!r} after upload: {missing}")
    return results
