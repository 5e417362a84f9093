"""Mail from the control plane itself (smtplib), through the county's mail server in cluster.yaml
`alerts:` (the one Alertmanager uses): enrolment links go to the person alone, and every
account made or reset in the console is told to the county."""
from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from controlplane.core.errors import GovhostError
from controlplane.core.manifest import AlertMail


class MailError(GovhostError):
    pass


def send(settings: AlertMail, to: list[str], subject: str, body: str) -> None:
    """One plain-text mail; MailError saying what failed."""
    msg = EmailMessage()
    msg["From"] = settings.sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg.set_content(body)
    host, _, port = settings.smarthost.rpartition(":")
    try:
        with smtplib.SMTP(host, int(port), timeout=20) as smtp:
            if settings.require_tls:
                smtp.starttls(context=ssl.create_default_context())
            smtp.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        raise MailError(f"mail to {', '.join(to)} through {settings.smarthost} failed: "
                        f"{exc}") from None
