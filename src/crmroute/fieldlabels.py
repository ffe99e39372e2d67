"""Field paths in the admin's words: ``rows[1].option`` is "Row 2, Destination Option".

Validation names a field by its path (``rules[0].rows[1].option``, the API's
``field``); people read its label as the form shows it and count rows from 1
as the form numbers them. ``describe()`` gives that text and ``explain()`` puts
it before a message, for the API's ``message``, the CLI and the UI's summary.
"""

from __future__ import annotations

import re

# The labels the forms show (rules/form.html and friends); a field not listed is spelt from its name.
LABELS = {
    "name": "Name", "crm_field": "CRM Field Name", "location": "Location", "greeting": "Greeting Instructions",
    "dtmf_timeout_ms": "DTMF timeout (ms)", "dtmf_max_digits": "DTMF max digits", "crm_source": "CRM To Use",
    "integration": "Integration", "crm_module": "CRM Modules", "crm_username": "CRM Username",
    "crm_password": "CRM Password", "custom_url": "CRM URL", "custom_post": "HTTP Method POST",
    "custom_headers": "Headers", "default_destination": "Default destination", "default_voicemail": "Is Voicemail",
    "deadline_ms": "Deadline (ms)", "cache_ttl_s": "Cache values for (s)", "keep_company": "While the CRM is asked",
    "moh_class": "Music on hold class", "rows": "Rows", "operator": "Operator", "value": "Value",
    "destination": "Destination", "option": "Destination Option", "type": "Type", "number": "Number",
    "voicemail": "Has voicemail", "rule": "Rule", "kind": "CRM", "enabled": "Enabled", "log_options": "Call logging",
    "subject_template": "Subject", "description_template": "Description", "log_level": "Log level",
    "link_record": "Link each call to", "inbound_answered": "Log answered inbound calls",
    "inbound_missed": "Log missed inbound calls", "outbound": "Log outbound calls",
    "create_unknown": "Create a contact or lead for unknown numbers", "extension": "Extension",
    "devices": "Devices", "identities": "CRM identities", "user_id": "CRM user id", "email": "E-mail",
    "username": "Username", "password": "Password", "license": "License", "did": "DID number",
    "ivr": "IVR number", "caller": "Caller number", "dtmf": "DTMF", "key": "Phone number or key",
    "fields": "Fields to read", "module": "Module", "settings": "Connection settings", "secrets": "Secrets",
}  # fmt: skip
# A list's items as the form (or the rules file) counts them.
ITEMS = {
    "rows": "Row", "custom_headers": "Header", "rules": "Rule", "integrations": "Integration",
    "destinations": "Destination", "dids": "DID", "ivrs": "IVR", "agents": "Agent", "devices": "Device",
}  # fmt: skip
IN_ITEM = {("custom_headers", "name"): "Header name", ("custom_headers", "value"): "Header value"}
SECTIONS = ("settings", "secrets")  # an integration's connection fields: the kind's setting names follow
ACRONYMS = {"id": "ID", "url": "URL", "api": "API", "crm": "CRM", "dtmf": "DTMF", "did": "DID", "ivr": "IVR",
            "moh": "MOH", "http": "HTTP", "https": "HTTPS", "oauth": "OAuth", "ssl": "SSL", "tls": "TLS"}  # fmt: skip
_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def spell(name: str) -> str:
    """A setting's label from its name: ``client_id`` is "Client ID"."""
    words = [ACRONYMS.get(w.lower(), w) for w in name.replace("-", "_").split("_") if w]
    if not words:
        return name
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])


def describe(path: str) -> str:
    """The field of ``path`` as the admin sees it, rows counted from 1; ``""`` for the whole object."""
    parts: list[str] = []
    parent = ""  # the name just before
    item_of = ""  # the list whose item the next name is in
    for match in _PART.finditer(path):
        name, index = match.group(1), match.group(2)
        if index is not None:
            if parts and parts[-1] == _label(parent, ""):
                parts.pop()  # "Rows" then "Row 2": the item says it
            parts.append(f"{ITEMS.get(parent, 'Item')} {int(index) + 1}")
            item_of, parent = parent, ""
            continue
        if parent in SECTIONS:  # "Connection settings, Client ID" reads as "Client ID"
            parts[-1:] = [spell(name)]
        elif parent == "identities":
            parts[-1:] = [f"CRM identity for {name}"]
        else:
            parts.append(_label(name, item_of))
        item_of, parent = "", name
    return ", ".join(parts)


def _label(name: str, item_of: str) -> str:
    return IN_ITEM.get((item_of, name)) or LABELS.get(name) or spell(name)


def explain(path: str, message: str) -> str:
    """``"Row 2, Destination Option: required"``; the message alone when the path names no field."""
    where = describe(path)
    return f"{where}: {message}" if where else message
