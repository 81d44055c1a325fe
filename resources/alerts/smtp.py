"""Email: one message per alert to the alert's owners that are email addresses (``team:<name>``
owners are not: an alert with no address among its owners sends nothing). STARTTLS is verified
against the system's CAs (or ``ca_bundle``) and never skipped when asked for; a channel that logs
in refuses to do so without it. The password is read when the channel first sends and appears in
no message or log."""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING

from pydantic import SecretStr

from resources.alerts.base import AlertChannel, ChannelFailed, SecretSource, digest, plain_text, resolve_secret

if TYPE_CHECKING:
    from checks.alerting import Alert

log = logging.getLogger(__name__)
# The shape core.zones accepts for an owner that is an address (the other kind is team:<name>).
ADDRESS = re.compile(r"^[^@\s:]+@[^@\s]+\.[^@\s]+$")
_LINE_BREAKS = re.compile(r"[\r\n]+")


def _header(text: str) -> str:
    return _LINE_BREAKS.sub(" ", text).strip()  # a header value with a line break is an injection


class SmtpChannel(AlertChannel):
    def __init__(self, name: str, host: str, port: int, sender: str, username: str | None = None,
                 password: SecretSource | str | None = None, starttls: bool = True, timeout_s: float = 5.0,
                 ca_bundle: str | None = None) -> None:
        self.name, self.host, self.port, self.sender = name, host, port, sender
        self.username, self.starttls, self.timeout_s, self.ca_bundle = username, starttls, timeout_s, ca_bundle
        self._password: SecretSource | None = SecretStr(password) if isinstance(password, str) else password
        self._sent: set[str] = set()

    def __repr__(self) -> str:
        return f"SmtpChannel(name={self.name!r}, host={self.host!r}, port={self.port})"

    def _where(self) -> str:
        return f"{self.name} channel (smtp {self.host}:{self.port})"

    def message(self, alert: Alert, recipients: list[str]) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = _header(alert.title)
        msg["From"] = self.sender
        msg["To"] = ", ".join(recipients)
        msg["Date"] = formatdate(alert.at, localtime=False)
        # Derived from the alert id: a repeat (at-least-once, see base.py) has the same Message-ID,
        # which mail systems and people can recognise.
        msg["Message-ID"] = f"<alert.{digest(alert.id)}@{self.sender.rpartition('@')[2]}>"
        msg["X-Alert-Id"] = _header(alert.id)
        msg["Auto-Submitted"] = "auto-generated"  # no out-of-office replies to the platform
        msg.set_content(plain_text(alert))
        return msg

    def deliver(self, alert: Alert) -> None:
        if alert.id in self._sent:
            return
        recipients = [o for o in alert.owners if ADDRESS.match(o)]
        if not recipients:
            log.info("%s: alert %s has no owner with an email address; nothing sent", self._where(), alert.id)
            return
        if self._password is not None and not self.starttls:
            raise ChannelFailed(f"{self._where()}: refusing to log in without STARTTLS")
        password = resolve_secret(self.name, self._password, "the SMTP password") if self._password else None
        failure: str | None = None
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context(cafile=self.ca_bundle))
                if self.username and password is not None:
                    smtp.login(self.username, password.get_secret_value())
                refused = smtp.send_message(self.message(alert, recipients), self.sender, recipients)
        except smtplib.SMTPResponseException as e:
            reply = e.smtp_error.decode("utf-8", "replace") if isinstance(e.smtp_error, bytes) else str(e.smtp_error)
            failure = f"{e.smtp_code} {reply}"
        except smtplib.SMTPRecipientsRefused as e:
            failure = f"every recipient refused ({', '.join(sorted(e.recipients))})"
        except (smtplib.SMTPException, OSError, ValueError) as e:  # timeouts and TLS errors are OSErrors
            failure = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if failure is not None:
            secret = password.get_secret_value() if password is not None else ""
            if secret:
                failure = failure.replace(secret, "****")  # a server that echoes what it was sent
            raise ChannelFailed(f"{self._where()}: {failure}")  # outside the handler: no __context__
        if refused:  # some were accepted: sending again would repeat it to them
            log.warning("%s: alert %s refused for %s", self._where(), alert.id, ", ".join(sorted(refused)))
        self._sent.add(alert.id)
