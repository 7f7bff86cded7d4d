"""The forwarding destination form (modal): add or edit where an organisation's alerts and events go.

The format choices follow the transport (a webhook takes JSON or OCSF, the others also CEF), and
so do the option fields (the syslog SD-ID and app name, the CA and client certificate files, the
HEC index, sourcetype and indexer acknowledgement). The secret (HEC token, webhook signing key,
TLS client key) is a password field that is never filled in again: left empty on an edit, the
stored one is kept. Everything is validated in :mod:`db.destinations`, whose
:class:`~db.destinations.DestinationError` is shown under the field it names.
"""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Label, Select

from console.context import ConsoleContext
from console.dialogs.admin_form import AdminForm, field_named_in, form_title
from console.widgets.tick_box import TickBox
from db.destinations import (
    DEFAULT_SD_ID,
    FORMATS_BY_TRANSPORT,
    OPTIONS_BY_TRANSPORT,
    DestinationError,
    DestinationSpec,
    create_destination,
    update_destination,
)
from db.models import FORWARD_TRANSPORTS, ForwardDestination
from db.secrets import SecretKeyError, secret_box_for

TRANSPORT_LABELS: dict[str, str] = {
    "syslog_tcp": "syslog over TCP",
    "syslog_tls": "syslog over TLS",
    "syslog_udp": "syslog over UDP (no delivery promise)",
    "relp": "RELP (acknowledged)",
    "hec": "Splunk HEC",
    "webhook": "webhook (signed)",
}
#: The text options the form offers: (key in ``options``, label, placeholder); each is shown for the
#: transports that accept it (:data:`db.destinations.OPTIONS_BY_TRANSPORT`).
TEXT_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("sd_id", "SD-ID", DEFAULT_SD_ID),
    ("app_name", "App name", "aifw"),
    ("ca_file", "CA file", "PEM file; empty: the system's CAs"),
    ("client_cert_file", "Client cert", "PEM file, with the key as the secret"),
    ("index", "HEC index", "empty: the token's default"),
    ("sourcetype", "Sourcetype", "empty: the token's default"),
)
#: What the secret is, per transport; a transport not listed takes none.
SECRET_LABELS: dict[str, str] = {
    "hec": "HEC token",
    "webhook": "Signing key",
    "syslog_tls": "Client key (optional)",
}
ADDRESS_HINTS: dict[str, str] = {
    "hec": "https://splunk.example:8088",
    "webhook": "https://siem.example/hooks/aifw",
}
#: A DestinationError naming one of these words lands under that field (the first that matches).
ERROR_FIELDS: tuple[tuple[str, str], ...] = (
    *((f"option {key}", key) for key, _, _ in TEXT_OPTIONS),
    ("option hec_ack", "hec_ack"),
    ("client_cert_file", "client_cert_file"),
    ("green", "risk_levels"),
    ("forward alerts", "risk_levels"),
    ("risk level", "risk_levels"),
    ("format", "format"),
    ("transport", "transport"),
    ("address", "address"),
    ("url", "address"),
    ("port", "address"),
    ("secret", "secret"),
    ("token", "secret"),
    ("name", "name"),
    ("organisation", "organization_id"),
    ("organization", "organization_id"),
)


def spec_of(destination: ForwardDestination, **changes: Any) -> DestinationSpec:
    """The spec a stored destination has (its secret kept), with ``changes``."""
    values: dict[str, Any] = {
        "name": destination.name,
        "transport": destination.transport,
        "format": destination.format,
        "address": destination.address,
        "options": dict(destination.options or {}),
        "forward_alerts": destination.forward_alerts,
        "event_risk_levels": frozenset(destination.event_risk_levels or ()),
        "enabled": destination.enabled,
    }
    values.update(changes)
    return DestinationSpec(**values)


class DestinationFormScreen(AdminForm[str | None]):
    """Add (``destination`` None) or edit a destination; returns its id once saved."""

    HELP = """\
Where an organisation's alerts and events go. **Transport**: syslog over TCP, TLS or UDP (UDP promises
no delivery), RELP (acknowledged), Splunk HEC, or a signed webhook; the **format** (JSON, CEF, OCSF)
and the options below follow it. **Address**: `host:port` for syslog and RELP, a URL for HEC and
webhooks. **Events**: the risk levels forwarded (OCSF takes no green).

The **secret** (HEC token, webhook signing key, TLS client key) is stored encrypted and never shown
again, not even here: on an edit, leave it empty to keep the stored one.

`ctrl+s` saves (checked first: a refusal is shown under its field), Tab and shift+Tab move between
fields, PgDn/PgUp scroll; Esc closes, asking first when something was changed.
"""
    HELP_TITLE = "Forwarding destination"
    BINDINGS = [
        # A modal screen does not see the app's keys: ? (outside a text field) is the app's help.
        Binding("question_mark", "app.help", "Help: these keys", show=False),
    ]

    def __init__(
        self,
        context: ConsoleContext,
        organizations: list[str],
        destination: ForwardDestination | None = None,
        *,
        organization_id: str | None = None,
    ) -> None:
        super().__init__(context)
        self.organizations = organizations
        self.destination = destination
        self.organization_id = destination.organization_id if destination else organization_id

    def compose(self) -> ComposeResult:
        current = self.destination
        transport = current.transport if current else "syslog_tcp"
        options = dict(current.options or {}) if current else {}
        title = f"Edit the destination {current.name}" if current else "Add a forwarding destination"
        with Vertical(id="destination-form", classes="dialog"):
            yield Label(form_title(title, "ctrl+s save · escape cancel"), id="destination-title")
            with VerticalScroll(id="destination-fields"):
                yield from self.field_row("Name", "name", Input(current.name if current else "", id="name"))
                organizations = self.organizations or ([self.organization_id] if self.organization_id else [])
                yield from self.field_row(
                    "Organisation",
                    "organization_id",
                    Select(
                        [(org, org) for org in organizations],
                        value=self.organization_id if self.organization_id in organizations else Select.BLANK,
                        prompt="organisation",
                        id="organization_id",
                        disabled=current is not None,
                    ),
                )
                yield from self.field_row(
                    "Transport",
                    "transport",
                    Select(
                        [(TRANSPORT_LABELS.get(name, name), name) for name in FORWARD_TRANSPORTS],
                        value=transport,
                        allow_blank=False,
                        id="transport",
                    ),
                )
                yield from self.field_row(
                    "Format",
                    "format",
                    Select(
                        [(name, name) for name in FORMATS_BY_TRANSPORT.get(transport, ("json",))],
                        value=current.format if current else "json",
                        allow_blank=False,
                        id="format",
                    ),
                )
                yield from self.field_row(
                    "Address",
                    "address",
                    Input(
                        current.address if current else "",
                        id="address",
                        placeholder=ADDRESS_HINTS.get(transport, "host:port"),
                    ),
                )
                stored = current is not None and current.secret_ciphertext is not None
                yield from self.field_row(
                    "Secret",
                    "secret",
                    Input(
                        password=True,
                        id="secret",
                        placeholder="empty: keep the stored one" if stored else "not shown again once saved",
                    ),
                )
                yield Label("", id="secret-hint", classes="form-hint")
                yield from self.field_row(
                    "Alerts",
                    "forward_alerts",
                    TickBox(
                        "forward alerts",
                        value=current.forward_alerts if current else True,
                        id="forward_alerts",
                    ),
                )
                yield from self.risk_levels_row(
                    "Events", (current.event_risk_levels or ()) if current else ("red", "amber")
                )
                for key, label, placeholder in TEXT_OPTIONS:
                    yield from self.field_row(
                        label,
                        key,
                        Input(str(options.get(key, "") or ""), id=key, placeholder=placeholder),
                    )
                yield from self.field_row(
                    "HEC ack",
                    "hec_ack",
                    TickBox("indexer acknowledgement", value=bool(options.get("hec_ack")), id="hec_ack"),
                )
            yield from self.form_buttons("Save")

    def on_mount(self) -> None:
        # Before the dialog marks what it holds as saved (after the first refresh) and focuses the name.
        self._follow_transport(self.transport)

    def scrollables(self) -> list[Widget]:
        """The frame and the fields' scroll (one-line inputs scroll too, but hold no more below)."""
        return [self.query_one("#destination-form"), self.query_one("#destination-fields")]

    @property
    def transport(self) -> str:
        return str(self.query_one("#transport", Select).value)

    @on(Select.Changed, "#transport")
    def _transport_changed(self) -> None:
        self._follow_transport(self.transport)

    def _follow_transport(self, transport: str) -> None:
        """Offer the formats, options and secret the transport has."""
        formats = FORMATS_BY_TRANSPORT.get(transport, ("json",))
        select = self.query_one("#format", Select)
        current = select.value
        with self.prevent(Select.Changed):
            select.set_options([(name, name) for name in formats])
            select.value = current if current in formats else formats[0]
        accepted = OPTIONS_BY_TRANSPORT.get(transport, ())
        for key, _, _ in TEXT_OPTIONS:
            self.show_field(key, key in accepted)
        self.show_field("hec_ack", "hec_ack" in accepted)
        secret_label = SECRET_LABELS.get(transport)
        self.show_field("secret", secret_label is not None)
        hint = self.query_one("#secret-hint", Label)
        hint.display = secret_label is not None
        if secret_label is not None:
            stored = self.destination is not None and self.destination.secret_ciphertext is not None
            keep = "empty keeps the stored one; " if stored else ""
            hint.update(f"{secret_label}: {keep}never shown again once saved")
        self.query_one("#address", Input).placeholder = ADDRESS_HINTS.get(transport, "host:port")

    def build(self) -> tuple[str | None, DestinationSpec]:
        """The organisation and the spec the form describes (the secret None when left empty)."""
        transport = self.transport
        options: dict[str, Any] = {}
        accepted = OPTIONS_BY_TRANSPORT.get(transport, ())
        for key, _, _ in TEXT_OPTIONS:
            value = self.query_one(f"#{key}", Input).value.strip()
            if value and key in accepted:
                options[key] = value
        if "hec_ack" in accepted and self.query_one("#hec_ack", Checkbox).value:
            options["hec_ack"] = True
        secret = self.query_one("#secret", Input).value if transport in SECRET_LABELS else ""
        organization = self.query_one("#organization_id", Select).value
        spec = DestinationSpec(
            name=self.query_one("#name", Input).value.strip(),
            transport=transport,
            format=str(self.query_one("#format", Select).value),
            address=self.query_one("#address", Input).value.strip(),
            options=options,
            forward_alerts=self.query_one("#forward_alerts", Checkbox).value,
            event_risk_levels=frozenset(self.ticked_risk_levels()),
            enabled=self.destination.enabled if self.destination is not None else True,
            secret=secret or None,
        )
        return (None if organization is Select.BLANK else str(organization)), spec

    def action_submit(self) -> None:
        organization_id, spec = self.build()
        if self.destination is None and organization_id is None:
            self.show_errors({"organization_id": "choose the organisation whose events it forwards"})
            return
        if not spec.name:
            self.show_errors({"name": "a destination needs a name"})
            return
        if self.context.require_admin("change forwarding destinations"):
            self.clear_errors()
            self.save(organization_id, spec)

    @work(exclusive=True, group="destination-form", exit_on_error=False)
    async def save(self, organization_id: str | None, spec: DestinationSpec) -> None:
        try:
            secrets = secret_box_for(self.context.settings)
        except SecretKeyError as error:
            self.show_errors({"secret": f"secrets cannot be stored: {error}"})
            return
        async with self.context.sessions() as session:
            try:
                if self.destination is None:
                    assert organization_id is not None
                    row = await create_destination(
                        session=session,
                        organization_id=organization_id,
                        spec=spec,
                        actor=self.context.actor,
                        secrets=secrets,
                    )
                else:
                    row, _ = await update_destination(
                        session=session,
                        destination_id=self.destination.id,
                        spec=spec,
                        actor=self.context.actor,
                        secrets=secrets,
                    )
            except DestinationError as error:
                self.show_errors({field_named_in(str(error), ERROR_FIELDS): str(error)})
                return
            await session.commit()
        self.query_one("#secret", Input).value = ""
        self.dismiss(str(row.id))
