"""The email, webhook and SNS alert channels against real receivers on loopback (an aiosmtpd SMTP
server with STARTTLS and AUTH, an http.server, moto's SNS delivering to SQS), their configuration
in the environment files, and the alerting sensor delivering to them. No mocks: what is asserted
is what the receivers got. Planted secrets (an SMTP password, a webhook URL's token) must appear in
no ChannelFailed message and no log line."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import re
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from dagster._core.test_utils import freeze_time
from support import SAMPLES, ingest, load_definitions_module

from checks.alerting import Alert, CheckOutcome, plan
from core.errors import ConfigError
from infra.stand_in import _self_signed
from resources.alerts import ChannelFailed, SmtpChannel, SnsChannel, WebhookChannel
from resources.alerts.webhook import payload
from resources.aws import AwsSession
from resources.environment import ENVIRONMENTS_DIR, load_environment
from resources.platform import PlatformResource

PASSWORD = "pl4nted-smtp-pa55word"
TOKEN = "T0PLANTED/B0PLANTED/xoxplantedwebhooktoken"  # a Slack webhook URL's secret path
OWNERS = ("team:finance-data", "finance-oncall@example.com", "cfo@example.com")
BAD = SAMPLES / "finance" / "expense_reports" / "expenses_2026-11-19.csv"  # lost its currency column


def make_alert(**changes: object) -> Alert:
    """An opened incident with a rule whose text has Slack's markup characters in it."""
    o = CheckOutcome(("staging", "finance", "expense_reports"), "contract", "expenses_2026-11-19.csv@0123456789abcdef",
                     7, "run7", False, "ERROR", 1_700_000_000.0, None,
                     {"rows_read": 200, "rows_quarantined": 12,
                      "violations": {"email: str_matches('^<.+@.+>$') & lower": 8, "*: dropoff_not_before_pickup": 4}})
    [alert] = plan({}, [o], lambda _: OWNERS, "http://127.0.0.1:3000")[1]
    return dataclasses.replace(alert, **changes)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never says a word."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in (PASSWORD, TOKEN, *TOKEN.split("/"), base64.b64encode(f"\0lake\0{PASSWORD}".encode()).decode()):
            assert secret not in text


# -- email ------------------------------------------------------------------------------------------
class Inbox:
    """aiosmtpd's handler: keeps what it was sent, and who logged in."""

    def __init__(self) -> None:
        self.envelopes: list = []
        self.logins: list[tuple[str, str]] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001
        self.envelopes.append(envelope)
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:  # noqa: ANN001
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password))
        return AuthResult(success=(login, password) == ("lake", PASSWORD), handled=False)


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[tuple[Inbox, int, Path]]:
    """An SMTP server on loopback that requires STARTTLS (its certificate signed by itself) before AUTH."""
    cert, key = _self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), tls_context=tls, require_starttls=True,
                            authenticator=inbox.authenticate, auth_require_tls=True, auth_required=True)
    controller.start()
    try:
        yield inbox, controller.port, cert
    finally:
        controller.stop()


def smtp_channel(port: int, cert: Path, password: str = PASSWORD, **kw: object) -> SmtpChannel:
    return SmtpChannel("email", "127.0.0.1", port, "lake-alerts@example.com", username="lake", password=password,
                       ca_bundle=str(cert), **kw)  # type: ignore[arg-type]


def test_email_reaches_the_owners_that_are_addresses_with_file_rule_and_counts(smtp_server) -> None:
    inbox, port, cert = smtp_server
    alert = make_alert()
    channel = smtp_channel(port, cert)
    channel.deliver(alert)
    channel.deliver(alert)  # the same id again, same channel: not repeated
    [envelope] = inbox.envelopes
    assert inbox.logins == [("lake", PASSWORD)]
    assert envelope.mail_from == "lake-alerts@example.com"
    assert envelope.rcpt_tos == ["finance-oncall@example.com", "cfo@example.com"]  # team:finance-data is no address
    msg = message_from_bytes(envelope.original_content, policy=policy.default)
    assert msg["Subject"] == alert.title == "[ERROR] contract failed on staging/finance/expense_reports " \
                                            "(expenses_2026-11-19.csv)"
    assert msg["X-Alert-Id"].strip() == alert.id  # (a long header is folded: unfolding leaves a space)
    assert re.fullmatch(r"<alert\.[0-9a-f]{32}@example\.com>", msg["Message-ID"])
    body = msg.get_content()
    assert "File:       expenses_2026-11-19.csv" in body and "Severity:   ERROR" in body
    assert "12 of 200 rows quarantined; 8 rows (4.0%) violated `email: str_matches('^<.+@.+>$') & lower`" in body
    assert "Run:        http://127.0.0.1:3000/runs/run7" in body and "/assets/staging/finance/expense_reports" in body
    assert "team:finance-data, finance-oncall@example.com, cfo@example.com" in body
    assert_no_secret(envelope.original_content.decode())
    # A fresh channel (a restarted daemon) would send it again: the Message-ID lets receivers tell.
    smtp_channel(port, cert).deliver(alert)
    assert message_from_bytes(inbox.envelopes[1].original_content, policy=policy.default)["Message-ID"] == \
        msg["Message-ID"]


def test_no_address_among_the_owners_sends_nothing(silent: int) -> None:
    # Pointed at a server that never answers: the channel returns at once, without connecting.
    started = time.monotonic()
    SmtpChannel("email", "127.0.0.1", silent, "a@example.com", timeout_s=5).deliver(make_alert(owners=("team:x",)))
    assert time.monotonic() - started < 1


def test_smtp_failures_are_channel_failed_naming_the_server_never_the_password(
        smtp_server, silent: int, caplog: pytest.LogCaptureFixture) -> None:
    inbox, port, cert = smtp_server
    caplog.set_level(logging.DEBUG)
    messages = []
    with pytest.raises(ChannelFailed) as e:  # a wrong password: the server refuses it
        smtp_channel(port, cert, password=PASSWORD + "-wrong").deliver(make_alert())
    messages.append(str(e.value))
    assert f"email channel (smtp 127.0.0.1:{port}): 535" in str(e.value)
    with pytest.raises(ChannelFailed, match="CERTIFICATE_VERIFY_FAILED"):  # TLS is verified
        SmtpChannel("email", "127.0.0.1", port, "a@example.com", "lake", PASSWORD).deliver(make_alert())
    closed = free_port()
    with pytest.raises(ChannelFailed, match=rf"email channel \(smtp 127.0.0.1:{closed}\): ConnectionRefusedError"):
        smtp_channel(closed, cert).deliver(make_alert())
    started = time.monotonic()
    with pytest.raises(ChannelFailed, match=rf"email channel \(smtp 127.0.0.1:{silent}\): .*timed out") as e:
        smtp_channel(silent, cert, timeout_s=0.5).deliver(make_alert())
    assert time.monotonic() - started < 2
    messages.append(str(e.value))
    with pytest.raises(ChannelFailed, match="refusing to log in without STARTTLS"):
        smtp_channel(port, cert, starttls=False).deliver(make_alert())
    assert inbox.envelopes == []
    assert_no_secret(*messages, caplog.text)


# -- webhooks ---------------------------------------------------------------------------------------
class Receiver:
    """An http.server on loopback that records every POST and answers ``status`` (the body of an
    error reply echoes the path, as a careless server might)."""

    def __init__(self, status: int = 200) -> None:
        self.status, self.requests = status, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((self.path, self.headers.get("Content-Type"), json.loads(body)))
                reply = b"ok" if outer.status < 300 else f"no_service for {self.path}".encode()
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str = f"/services/{TOKEN}?token=q{TOKEN[-6:]}") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    good, failing = Receiver(200), Receiver(500)
    try:
        yield good, failing
    finally:
        good.stop()
        failing.stop()


def test_webhook_posts_slack_json_with_escaped_text(receivers) -> None:
    good, _ = receivers
    alert = make_alert()
    channel = WebhookChannel("slack", good.url())
    channel.deliver(alert)
    channel.deliver(alert)  # not repeated by the same channel
    [(path, content_type, body)] = good.requests
    assert path == f"/services/{TOKEN}?token=q{TOKEN[-6:]}" and content_type.startswith("application/json")
    assert body == payload(alert) and body["alert_id"] == alert.id
    assert isinstance(body["text"], str) and isinstance(body["blocks"], list) and body["blocks"]
    for block in body["blocks"]:  # the shapes Slack's Block Kit accepts
        assert block["type"] in ("section", "context")
        texts = [block["text"]] if "text" in block else block.get("fields", []) + block.get("elements", [])
        assert texts and all(t["type"] == "mrkdwn" and 0 < len(t["text"]) <= 3000 for t in texts)
    headline = body["blocks"][0]["text"]["text"]
    assert headline.startswith(f"*{alert.title}*\n")
    assert "`email: str_matches('^&lt;.+@.+&gt;$') &amp; lower`" in headline
    assert "<" not in headline and ">" not in headline and "&lt;" in body["text"]
    links = body["blocks"][-1]["elements"][0]["text"]
    assert links == ("<http://127.0.0.1:3000/runs/run7|Run> · "
                     "<http://127.0.0.1:3000/assets/staging/finance/expense_reports|Asset>")
    fields = {f["text"].split("\n", 1)[0]: f["text"].split("\n", 1)[1] for f in body["blocks"][1]["fields"]}
    assert fields["*File*"] == "expenses_2026-11-19.csv" and fields["*Severity*"] == "ERROR"


def test_a_failing_or_silent_webhook_fails_quickly_without_holding_up_another(
        receivers, silent: int, caplog: pytest.LogCaptureFixture) -> None:
    good, failing = receivers
    caplog.set_level(logging.DEBUG)
    channels = [WebhookChannel("failing", failing.url(), timeout_s=0.5),
                WebhookChannel("silent", f"http://127.0.0.1:{silent}/services/{TOKEN}", timeout_s=0.5),
                WebhookChannel("good", good.url(), timeout_s=0.5)]
    failures = {}
    started = time.monotonic()
    for channel in channels:  # as the sensor does: each on its own
        try:
            channel.deliver(make_alert())
        except ChannelFailed as e:
            failures[channel.name] = str(e)
    assert time.monotonic() - started < 3
    assert len(good.requests) == 1 and len(failing.requests) == 1
    assert failures["failing"] == f"failing channel (http://127.0.0.1:{failing.port}): HTTP 500 Internal Server " \
                                  "Error: no_service for ****?****"  # the echoed path and query, masked
    assert failures["silent"].startswith(f"silent channel (http://127.0.0.1:{silent}): ") and \
        "timed out" in failures["silent"]
    assert set(failures) == {"failing", "silent"}
    assert_no_secret(*failures.values(), caplog.text)


@pytest.mark.parametrize(("url", "message"), [
    ("not a url", "the webhook URL is not an http(s) URL"),
    (f"http://hooks.example.com/services/{TOKEN}", "refusing to send a webhook URL over plain http"),
    (f"ftp://127.0.0.1/{TOKEN}", "the webhook URL is not an http(s) URL"),
])
def test_a_webhook_url_that_is_not_one_fails_without_showing_it(url: str, message: str) -> None:
    with pytest.raises(ChannelFailed, match=re.escape(message)) as e:
        WebhookChannel("slack", url).deliver(make_alert())
    assert_no_secret(str(e.value))


# -- SNS, in the moto stand-in ----------------------------------------------------------------------
def _queue(session: AwsSession, topic_arn: str, name: str, **attributes: str) -> str:
    sqs, sns = session.client("sqs"), session.client("sns")
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
    return url


def _received(session: AwsSession, url: str) -> list[dict]:
    messages = session.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                                     MessageAttributeNames=["All"]).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def test_sns_publishes_what_an_sqs_subscriber_receives(aws) -> None:
    session = AwsSession("eu-west-1")
    topic = session.client("sns").create_topic(Name="lake-alerts")["TopicArn"]
    queue = _queue(session, topic, "lake-alerts-inbox")
    alert = make_alert(title="[ERROR] contract failed on staging/finance/expense_reports (Überweisungen_" + "x" * 120
                             + ".csv)\nsecond line")
    channel = SnsChannel("oncall", topic, session)
    channel.deliver(alert)
    channel.deliver(alert)  # not repeated by the same channel
    [notification] = _received(session, queue)
    subject = notification["Subject"]
    assert len(subject) == 100 and subject.isascii() and subject.endswith("...") and "\n" not in subject
    assert subject.startswith("[ERROR] contract failed on staging/finance/expense_reports (?berweisungen_xxx")
    assert "8 rows (4.0%) violated `email: str_matches('^<.+@.+>$') & lower`" in notification["Message"]
    assert "File:       expenses_2026-11-19.csv" in notification["Message"]
    assert {k: v["Value"] for k, v in notification["MessageAttributes"].items()} == {
        "severity": "ERROR", "kind": "opened", "alert_id": alert.id}


def test_a_fifo_topic_drops_a_repeated_alert_id(aws) -> None:
    session = AwsSession("eu-west-1")
    topic = session.client("sns").create_topic(Name="lake-alerts.fifo", Attributes={"FifoTopic": "true"})["TopicArn"]
    queue = _queue(session, topic, "lake-alerts-inbox.fifo", FifoQueue="true")
    alert = make_alert()
    SnsChannel("oncall", topic, session).deliver(alert)
    SnsChannel("oncall", topic, session).deliver(alert)  # a restarted daemon: SNS deduplicates by the alert id
    SnsChannel("oncall", topic, session).deliver(make_alert(id=alert.id + "-other"))
    assert [n["MessageAttributes"]["alert_id"]["Value"] for n in _received(session, queue)] == [
        alert.id, alert.id + "-other"]


def test_sns_errors_are_channel_failed(aws) -> None:
    missing = "arn:aws:sns:eu-west-1:123456789012:no-such-topic"
    with pytest.raises(ChannelFailed, match=r"^oncall channel: publishing to SNS topic .*no-such-topic: NotFound"):
        SnsChannel("oncall", missing, AwsSession("eu-west-1")).deliver(make_alert())


# -- the environment's alerts section ---------------------------------------------------------------
@pytest.fixture
def env_dir(tmp_path: Path) -> Path:
    d = tmp_path / "environments"
    shutil.copytree(ENVIRONMENTS_DIR, d)
    return d


def _with_alerts(env_dir: Path, name: str, block: str) -> Path:
    path = env_dir / f"{name}.yaml"
    text = re.sub(r"(?ms)^alerts:\n(  .*?\n)+", "", path.read_text())
    path.write_text(text + block)
    return path


LOCAL_ALERTS = """alerts:
  channels:
    email:
      kind: smtp
      host: smtp.example.com
      sender: lake-alerts@example.com
      username: lake-alerts
      password_env: SMTP_PASSWORD
    chat:
      kind: webhook
      url_secret: alerts/chat
      timeout_seconds: 2
"""


def test_an_alerts_section_is_read_with_its_defaults(env_dir: Path, tmp_path: Path) -> None:
    _with_alerts(env_dir, "local", LOCAL_ALERTS)
    env = load_environment("local", str(tmp_path), str(env_dir))
    email, chat = env.alerts.channels["email"], env.alerts.channels["chat"]
    assert (email.kind, email.port, email.starttls, email.timeout_seconds, email.password_env) == \
        ("smtp", 587, True, 5.0, "SMTP_PASSWORD")
    assert (chat.kind, chat.url_secret, chat.timeout_seconds, chat.port) == ("webhook", "alerts/chat", 2.0, None)
    assert load_environment("local", str(tmp_path)).alerts.channels == {}  # the shipped local: none
    for name in ("dev", "test", "prod"):
        shipped = load_environment(name, str(tmp_path))
        assert shipped.aws is not None
        prefix = shipped.aws.resource_prefix
        assert {n: (c.kind, c.topic_arn or c.url_secret) for n, c in shipped.alerts.channels.items()} == {
            "oncall": ("sns", f"arn:aws:sns:{shipped.aws.region}:{shipped.aws.account_id}:{prefix}-alerts"),
            "slack": ("webhook", f"{prefix}/slack-webhook")}


@pytest.mark.parametrize(("block", "message"), [
    ("    x:\n      kind: pagerduty\n", "alerts.channels.x.kind: Input should be 'smtp', 'webhook' or 'sns'"),
    ("    x:\n      kind: webhook\n      url_env: HOOK\n      colour: blue\n", "alerts.channels.x.colour: unknown key"),
    ("    x:\n      kind: webhook\n      url: https://hooks.slack.com/services/" + TOKEN + "\n",
     "url: a webhook URL is a secret: store it in the secret store and name it with url_secret"),
    ("    x:\n      kind: webhook\n      url_secret: https://hooks.slack.com/services/" + TOKEN + "\n",
     "url_secret looks like a URL"),
    ("    x:\n      kind: webhook\n      url_secret: hooks.slack.com/services/" + TOKEN + "\n",
     "url_secret looks like a URL"),
    ("    x:\n      kind: webhook\n", "a webhook channel needs one of url_secret or url_env"),
    ("    x:\n      kind: webhook\n      url_env: HOOK\n      host: smtp.example.com\n",
     "host: not a setting of a webhook channel (ca_bundle, timeout_seconds, url_env, url_secret)"),
    ("    x:\n      kind: smtp\n      host: smtp.example.com\n      sender: a@example.com\n      password: " + PASSWORD
     + "\n", "password: a password is a secret: name it with password_secret"),
    ("    x:\n      kind: smtp\n      host: smtp.example.com\n      sender: a@example.com\n      username: u\n"
     "      password_env: P\n      starttls: false\n", "needs starttls: true (the password would travel in clear)"),
    ("    x:\n      kind: smtp\n      host: smtp.example.com\n      sender: a@example.com\n      username: u\n",
     "username and a password (password_secret or password_env) go together"),
    ("    x:\n      kind: smtp\n      host: smtp.example.com\n      sender: team:finance\n",
     "sender 'team:finance' is not an email address"),
    ("    x:\n      kind: sns\n      topic_arn: arn:aws:sns:eu-west-1:123456789012:alerts\n",
     "an aws section (region, account_id, resource_prefix) is needed for an sns alert channel (x)"),
    ("    alert_file:\n      kind: webhook\n      url_env: HOOK\n", "channel name 'alert_file' is reserved"),
    ("    log:\n      kind: webhook\n      url_env: HOOK\n", "channel name 'log' is reserved"),
    ("    Slack-Alerts:\n      kind: webhook\n      url_env: HOOK\n", "channel name 'Slack-Alerts' must match"),
])
def test_a_bad_alerts_section_is_refused_clearly(env_dir: Path, tmp_path: Path, block: str, message: str) -> None:
    path = _with_alerts(env_dir, "local", "alerts:\n  channels:\n" + block)
    with pytest.raises(ConfigError) as e:
        load_environment("local", str(tmp_path), str(env_dir))
    assert message in str(e.value) and str(path) in str(e.value)
    assert_no_secret(str(e.value))


def test_an_unknown_key_is_named_with_its_line(env_dir: Path, tmp_path: Path) -> None:
    path = _with_alerts(env_dir, "local", LOCAL_ALERTS.replace("      timeout_seconds: 2\n",
                                                               "      timeout_seconds: 2\n      colour: blue\n"))
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "colour" in text)
    with pytest.raises(ConfigError, match=re.escape(f"{path}:{line}: alerts.channels.chat.colour: unknown key")):
        load_environment("local", str(tmp_path), str(env_dir))


@pytest.mark.parametrize(("old", "new", "message"), [
    (":111111111111:acme-lake-dev-alerts", ":999999999999:acme-lake-dev-alerts",
     "is not in the environment's account and region (111111111111, eu-west-1)"),
    ("arn:aws:sns:eu-west-1:111111111111:acme-lake-dev-alerts", "arn:aws:sns:eu-west-1:111111111111:bad name",
     "topic_arn 'arn:aws:sns:eu-west-1:111111111111:bad name' is not an SNS topic ARN"),
    ("acme-lake-dev/slack-webhook", "acme-lake-prod/slack-webhook", "which belongs to environment 'prod'"),
    ("acme-lake-dev-alerts", "acme-lake-prod-alerts", None),  # another account's name: refused by account only
])
def test_the_aws_alert_channels_are_the_environments_own(env_dir: Path, tmp_path: Path, old: str, new: str,
                                                         message: str | None) -> None:
    path = env_dir / "dev.yaml"
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))
    if message is None:
        assert load_environment("dev", str(tmp_path), str(env_dir)).alerts.channels["oncall"].topic_arn.endswith(new)
        return
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_environment("dev", str(tmp_path), str(env_dir))


def test_alert_channels_follow_the_environment_and_read_no_secret_before_delivering(
        env_dir: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_alerts(env_dir, "local", LOCAL_ALERTS)
    monkeypatch.setenv("PLATFORM_ENVIRONMENTS_DIR", str(env_dir))
    monkeypatch.delenv("PLATFORM_SECRET_ALERTS_CHAT", raising=False)
    channels = PlatformResource(environment="local", home=str(home)).alert_channels()
    assert [(c.name, type(c).__name__) for c in channels] == [
        ("alert_file", "JsonLinesChannel"), ("email", "SmtpChannel"), ("chat", "WebhookChannel")]
    email, chat = channels[1], channels[2]
    assert isinstance(email, SmtpChannel)
    assert (email.host, email.port, email.starttls) == ("smtp.example.com", 587, True)
    with pytest.raises(ChannelFailed, match=r"^chat channel: the webhook URL: secret 'alerts/chat' is not set: set "
                                            "the environment variable PLATFORM_SECRET_ALERTS_CHAT"):
        chat.deliver(make_alert())
    monkeypatch.delenv("SMTP_PASSWORD", raising=False)
    with pytest.raises(ChannelFailed, match="^email channel: the SMTP password: the environment variable "
                                            "SMTP_PASSWORD is not set"):
        email.deliver(make_alert())


# -- the sensor, on a real instance, delivering to configured channels ----------------------------------
def _tick(instance: dg.DagsterInstance, platform: PlatformResource, cursor: str | None) -> str:
    sensor = next(s for s in load_definitions_module().defs.sensors if s.name == "alerts")
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"platform": platform})
    return sensor(ctx).cursor


def test_the_sensor_delivers_to_each_configured_channel_and_keeps_the_failing_ones_pending(
        env_dir: Path, home: Path, receivers, silent: int, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    good, failing = receivers
    _with_alerts(env_dir, "local", """alerts:
  channels:
    good:
      kind: webhook
      url_env: ALERTS_GOOD_URL
    failing:
      kind: webhook
      url_secret: alerts/failing
    silent:
      kind: webhook
      url_env: ALERTS_SILENT_URL
      timeout_seconds: 0.5
    unset:
      kind: webhook
      url_secret: alerts/unset
""")
    monkeypatch.setenv("PLATFORM_ENVIRONMENTS_DIR", str(env_dir))
    monkeypatch.setenv("ALERTS_GOOD_URL", good.url())
    monkeypatch.setenv("PLATFORM_SECRET_ALERTS_FAILING", failing.url())
    monkeypatch.setenv("ALERTS_SILENT_URL", f"http://127.0.0.1:{silent}/services/{TOKEN}")
    monkeypatch.delenv("PLATFORM_SECRET_ALERTS_UNSET", raising=False)
    platform = PlatformResource(environment="local", home=str(home))
    caplog.set_level(logging.DEBUG)
    with tempfile.TemporaryDirectory() as d, dg.instance_for_test(temp_dir=d) as instance:
        assert not ingest(home, "finance__expense_reports", BAD, instance=instance).success
        started = time.monotonic()
        cursor = _tick(instance, platform, None)
        assert time.monotonic() - started < 10
        assert len((home / "alerts" / "alerts.jsonl").read_text().splitlines()) == 1  # the always-on file
        [(_, _, body)] = good.requests
        assert "missing columns: currency" in body["text"] and ":contract:expenses_2026-11-19.csv:opened:" in \
            body["alert_id"]
        assert len(failing.requests) == 1
        assert sorted(p["channel"] for p in json.loads(cursor)["pending"]) == ["failing", "silent", "unset"]
        # Later, with the receiver mended and the secret set: the rest is delivered, the good one gets no repeat.
        failing.status = 200
        monkeypatch.setenv("PLATFORM_SECRET_ALERTS_UNSET", good.url("/services/unset"))
        monkeypatch.setenv("ALERTS_SILENT_URL", good.url("/services/silent"))
        with freeze_time(time.time() + 3600):  # past any backoff
            cursor = _tick(instance, platform, cursor)
        assert json.loads(cursor)["pending"] == []
        assert [p for p, _, _ in good.requests][0] == good.url()[len(f"http://127.0.0.1:{good.port}"):]
        assert sorted(p for p, _, _ in good.requests[1:]) == ["/services/silent", "/services/unset"]
        assert len(failing.requests) == 2
    out, err = capsys.readouterr()
    logged = caplog.text + out + err  # the sensor's log goes to stderr
    assert "not delivered to failing" in logged and "HTTP 500" in logged and "not delivered to unset" in logged
    assert_no_secret(logged, cursor)


# -- an AWS environment: the stack's topic and secret, the channels its file declares ------------------
@pytest.mark.filterwarnings("ignore:Tried to parse .* not supported by moto.s CloudFormation:UserWarning")
def test_the_dev_stack_has_the_topic_and_secret_its_channels_use(aws, home: Path, receivers,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    from aws_stand_in import clients, deploy_stack

    from core.zones import load_zones

    good, failing = receivers
    env = load_environment("dev", str(home))
    assert env.aws is not None
    monkeypatch.setenv("MOTO_ACCOUNT_ID", env.aws.account_id)  # the platform's own clients, in the env's account
    stack = deploy_stack(env, load_zones(), "lake-dev", bucket_policies=False)
    topic_arn = env.alerts.channels["oncall"].topic_arn
    assert stack["outputs"]["AlertOncallTopicArn"] == topic_arn
    client = clients(env.aws.region, env.aws.account_id)
    attributes = client("sns").get_topic_attributes(TopicArn=topic_arn)["Attributes"]
    assert attributes["KmsMasterKeyId"] == stack["physical"]["LakeKey"]
    session = AwsSession(env.aws.region)
    queue = _queue(session, topic_arn, "oncall-inbox")
    secret = env.alerts.channels["slack"].url_secret
    sm = client("secretsmanager")
    assert sm.describe_secret(SecretId=secret)["KmsKeyId"] == stack["physical"]["LakeKey"]

    channels = {c.name: c for c in PlatformResource(environment="dev", home=str(home)).alert_channels()}
    assert list(channels) == ["alert_file", "oncall", "slack"]
    alert = make_alert()
    with pytest.raises(ChannelFailed, match="the webhook URL is not an http"):  # still the stack's placeholder
        channels["slack"].deliver(alert)
    sm.put_secret_value(SecretId=secret, SecretString=failing.url())
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ChannelFailed) as e:
        PlatformResource(environment="dev", home=str(home)).alert_channels()[2].deliver(alert)
    assert_no_secret(str(e.value), caplog.text)
    sm.put_secret_value(SecretId=secret, SecretString=good.url())
    channels = {c.name: c for c in PlatformResource(environment="dev", home=str(home)).alert_channels()}
    channels["slack"].deliver(alert)
    channels["oncall"].deliver(alert)
    assert [b["alert_id"] for _, _, b in good.requests] == [alert.id]
    [notification] = _received(session, queue)
    assert notification["TopicArn"] == topic_arn and notification["Subject"] == alert.title
