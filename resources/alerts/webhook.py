"""A webhook: one POST per alert of a Slack-compatible JSON body (``text`` plus ``blocks`` in mrkdwn),
which Slack's incoming webhooks and most chat and incident tools accept.

A webhook URL is a secret (whoever has a Slack one can post to the channel): it is read when the
channel first delivers, is sent only over https (http only to a loopback address), and no
message or log shows more of it than ``scheme://host:port``. Redirects are not followed: a
redirected POST would go somewhere the URL did not say."""

from __future__ import annotations

import ipaddress
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from resources.alerts.base import AlertChannel, ChannelFailed, SecretSource, details, resolve_secret

if TYPE_CHECKING:
    from checks.alerting import Alert

SECTION_CHARS = 3000  # Slack's limit on a section's text
REPLY_CHARS = 200  # of an error reply, in a message (Slack says e.g. "invalid_payload", "no_service")


def escape(text: str) -> str:
    """Slack's escaping of user text: &, < and > are markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int = SECTION_CHARS) -> str:
    if len(text) <= limit:
        return text
    return re.sub(r"&[a-z]*$", "", text[: limit - 1]) + "…"  # never half an escape


def _link(url: str, label: str) -> str:
    return f"<{escape(url).replace('|', '%7C')}|{escape(label)}>"


def payload(alert: Alert) -> dict[str, Any]:
    """The JSON body: ``text`` (the notification's fallback), the blocks, and ``alert_id``."""
    facts = [(label, value) for label, value in details(alert)
             if label not in ("Run", "Asset page", "Alert id")]
    links = " · ".join(_link(url, label) for url, label in ((alert.run_url, "Run"), (alert.asset_url, "Asset"))
                       if url)
    headline = _clip(f"*{escape(alert.title)}*\n{escape(alert.body)}")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": headline}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _clip(f"*{label}*\n{escape(value)}", 2000)}
                                       for label, value in facts[:10]]},
    ]
    if links:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": links}]})
    return {"text": _clip(escape(f"{alert.title}: {alert.body}"), 4000), "blocks": blocks, "alert_id": alert.id}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status: a failure like any non-2xx


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebhookChannel(AlertChannel):
    def __init__(self, name: str, url: SecretSource | str, timeout_s: float = 5.0,
                 ca_bundle: str | None = None) -> None:
        self.name, self.timeout_s, self.ca_bundle = name, timeout_s, ca_bundle
        self._url: SecretSource = SecretStr(url) if isinstance(url, str) else url
        self._sent: set[str] = set()

    def __repr__(self) -> str:
        return f"WebhookChannel(name={self.name!r})"

    def _target(self) -> tuple[str, str]:
        """(the URL, what messages may show of it: scheme://host[:port])."""
        url = resolve_secret(self.name, self._url, "the webhook URL").get_secret_value().strip()
        try:
            parts = urllib.parse.urlsplit(url)
            host, port = parts.hostname or "", parts.port
        except ValueError:
            host, port, parts = "", None, None
        if parts is None or not host or parts.scheme not in ("https", "http"):
            raise ChannelFailed(f"{self.name} channel: the webhook URL is not an http(s) URL (its value is not "
                                "shown; a placeholder secret not yet set?)")
        shown = f"{parts.scheme}://{host}" + (f":{port}" if port else "")
        if parts.scheme == "http" and not _loopback(host):
            raise ChannelFailed(f"{self.name} channel ({shown}): refusing to send a webhook URL over plain http "
                                "(https only, http to a loopback address)")
        return url, shown

    def deliver(self, alert: Alert) -> None:
        if alert.id in self._sent:
            return
        url, shown = self._target()
        request = urllib.request.Request(url, data=json.dumps(payload(alert)).encode("utf-8"), method="POST",
                                         headers={"Content-Type": "application/json; charset=utf-8",
                                                  "User-Agent": "lake-platform-alerts"})
        opener = urllib.request.build_opener(
            _NoRedirects(), urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=self.ca_bundle)))
        failure: str | None = None
        try:
            with opener.open(request, timeout=self.timeout_s) as response:
                status = response.status
        except urllib.error.HTTPError as e:  # non-2xx; the exception holds the full URL: only its status is kept
            reply = e.read(REPLY_CHARS).decode("utf-8", "replace") if e.fp is not None else ""
            failure = f"HTTP {e.code} {e.reason}" + (f": {reply.strip()}" if reply.strip() else "")
        except urllib.error.URLError as e:
            failure = f"{type(e.reason).__name__}: {e.reason}" if isinstance(e.reason, BaseException) \
                else str(e.reason)
        except (OSError, HTTPException, ValueError) as e:  # a timeout while reading the reply is an OSError
            failure = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        else:
            if not 200 <= status < 300:
                failure = f"HTTP {status}"
        if failure is not None:
            secret = urllib.parse.urlsplit(url)
            for part in (secret.path, secret.query, secret.password or ""):
                if len(part) > 1:
                    failure = failure.replace(part, "****")  # a reply that echoes the request
            raise ChannelFailed(f"{self.name} channel ({shown}): {failure}")  # outside the handler: no __context__
        self._sent.add(alert.id)
