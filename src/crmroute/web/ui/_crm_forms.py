"""How each CRM's integration form is laid out: sign-in methods, labels, help and the vendor's setup page.

The connector's ``Settings`` say what can be stored; this says how an admin
fills it in. The form asks for the sign-in method first and shows only that
method's fields, then the connection, then the few options most admins set;
every other setting (tuning, paths, templates) is folded under "Advanced".
Vendor facts come from ``shared/reference/crm-apis.md``.

A method either is the value of a setting (``auth_field``: Salesforce's
``auth_flow``, Zendesk's ``auth`` ...) or, for CRMs without one (HubSpot,
Zoho, Pipedrive), is recognised from which credentials are stored. Saving
sends only the chosen method's credentials: switching method drops the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crmroute.connectors.base import SettingSpec

ACRONYMS = {"url": "URL", "uri": "URI", "id": "ID", "api": "API", "oauth": "OAuth", "ttl": "TTL", "jwt": "JWT",
            "ntlm": "NTLM", "pem": "PEM", "json": "JSON"}  # fmt: skip

# The settings every connector has (connectors/base.py ConnectorSettings): always under Advanced.
COMMON_LABELS = {
    "match_pick": ("When several records match", "Which one routes the call: the most recently modified (newest), "
                   "the oldest, or the first the CRM lists."),
    "key_field": ("Field looked up by typed digits", "API name of the field a caller's typed key (DTMF) is "
                  "searched in, e.g. AccountNumber; empty: the record id."),
    "cache_ttl_s": ("Cache values for (seconds)", "How long a value read from this CRM is reused for the same "
                    "caller and field; 0: never; empty: the server default (60). A rule's own setting wins."),
    "requests_per_second": ("Requests per second, at most", "A call that would exceed it waits within its "
                            "deadline, else goes to the default destination; empty: the CRM's published pace."),
    "daily_quota": ("API requests per 24 hours", "Your edition's allocation; a warning at 80 %, calls go to the "
                    "default destination when spent; empty: the documented default; 0: not counted."),
    "max_concurrency": ("Requests at once, at most", "Requests in flight to this CRM at the same time (empty: 10)."),
}  # fmt: skip


@dataclass(frozen=True)
class AuthMethod:
    key: str
    label: str
    fields: tuple[str, ...]
    help: str = ""
    sets: dict[str, str] = field(default_factory=dict)  # other settings this method implies


@dataclass(frozen=True)
class CrmForm:
    setup_url: str
    setup: str  # where to create the app / key, which scopes
    methods: tuple[AuthMethod, ...]
    connection: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    auth_field: str = ""
    # setting -> (label, help); an empty help keeps the connector's
    labels: dict[str, tuple[str, str]] = field(default_factory=dict)

    def method(self, key: str) -> AuthMethod:
        return next((m for m in self.methods if m.key == key), self.methods[0])

    def credential_fields(self) -> set[str]:
        return {name for m in self.methods for name in m.fields} | {name for m in self.methods for name in m.sets}

    def advanced(self, specs: list[SettingSpec]) -> list[str]:
        placed = self.credential_fields() | set(self.connection) | set(self.options) | {self.auth_field}
        return [s.name for s in specs if s.name not in placed]

    def chosen(self, settings: dict[str, Any], stored_secrets: set[str]) -> str:
        """The method of a stored integration (``settings`` with the defaults filled in): its auth setting
        (and the settings the method implies), else the one whose own credentials are stored."""
        for m in self.methods:
            expected = ({self.auth_field: m.key} if self.auth_field else {}) | m.sets
            if m.sets and all(str(settings.get(k, "")) == v for k, v in expected.items()):
                return m.key
        if self.auth_field and settings.get(self.auth_field):
            return self.method(str(settings[self.auth_field])).key
        for m in self.methods:
            others = {name for o in self.methods if o is not m for name in o.fields}
            own = [name for name in m.fields if name not in others]
            if any(name in stored_secrets or settings.get(name) not in (None, "") for name in own):
                return m.key
        return self.methods[0].key


def label(kind_form: CrmForm | None, spec: SettingSpec) -> tuple[str, str]:
    """The field's label and help on this CRM's form."""
    if kind_form and spec.name in kind_form.labels:
        text, help_text = kind_form.labels[spec.name]
        return text, help_text or spec.help
    if spec.name in COMMON_LABELS:
        return COMMON_LABELS[spec.name]
    words = [ACRONYMS.get(w, w) for w in spec.name.split("_")]
    words[0] = words[0][:1].upper() + words[0][1:]
    return " ".join(words), spec.help


CLIENT = ("client_id", "client_secret")
FORMS: dict[str, CrmForm] = {
    "bullhorn": CrmForm(
        setup_url="https://bullhorn.github.io/Getting-Started-with-REST",
        setup="Bullhorn Support issues the API key (client ID and secret) for your corporation: ask for refresh "
              "tokens to be enabled and give them your redirect URI if you use one. Sign in with a dedicated API "
              "user; crmroute finds its data centre through loginInfo.",
        methods=(AuthMethod("oauth", "API key and API user (OAuth)", (*CLIENT, "username", "password")),),
        options=("contact_entities", "create_as"),
        labels={"client_id": ("Client ID", ""), "client_secret": ("Client secret", ""),
                "username": ("API username", ""), "password": ("API user's password", ""),
                "contact_entities": ("Contacts are", ""), "create_as": ("Create unknown callers as", ""),
                "login_info_url": ("loginInfo URL", ""), "auth_url": ("OAuth URL", ""),
                "rest_login_url": ("REST login URL", ""), "redirect_uri": ("Redirect URI", ""),
                "session_minutes": ("Session length (minutes)", "")},  # fmt: skip
    ),
    "dynamics2015": CrmForm(
        setup_url="https://learn.microsoft.com/en-us/previous-versions/dynamicscrm-2015/developers-guide/"
                  "dn531009(v=crm.7)",
        setup="CRM Online: register an application in Azure AD with permission to Dynamics CRM Online and use "
              "its client ID. On-premises with claims (IFD): register the client in AD FS. Plain Active "
              "Directory: NTLM with a domain user.",
        auth_field="auth",
        methods=(
            AuthMethod("oauth_password", "OAuth, user and password", ("token_url", "client_id", "client_secret",
                       "username", "password"), "CRM Online with Azure AD, or AD FS 2016 and later."),
            AuthMethod("oauth_refresh_token", "OAuth refresh token", ("token_url", "client_id", "client_secret",
                       "refresh_token"), "A refresh token from a one-time sign-in (AD FS 2012 R2)."),
            AuthMethod("oauth_client_credentials", "OAuth client credentials", ("token_url", *CLIENT),
                       "An application user (not confirmed for 2015)."),
            AuthMethod("ntlm", "Windows (NTLM)", ("username", "password"), "On-premises Active Directory."),
        ),  # fmt: skip
        connection=("org_url",),
        options=("create_as",),
        labels={"org_url": ("Organization URL", ""), "token_url": ("Token endpoint URL", ""),
                "client_id": ("Application (client) ID", ""), "client_secret": ("Client secret", ""),
                "username": ("User", ""), "password": ("Password", ""), "refresh_token": ("Refresh token", ""),
                "resource": ("OAuth resource", ""), "create_as": ("Create unknown callers as", "")},  # fmt: skip
    ),
    "hubspot": CrmForm(
        setup_url="https://developers.hubspot.com/docs/api/private-apps",
        setup="In HubSpot: Settings → Integrations → Private Apps → Create a private app, with the scopes "
              "crm.objects.contacts.read, crm.objects.contacts.write and crm.objects.companies.read; copy its "
              "access token (pat-…). For a public app, install it with the same scopes and paste the OAuth "
              "client ID, secret and refresh token.",
        methods=(
            AuthMethod("private_app", "Private app access token", ("access_token",)),
            AuthMethod("oauth", "OAuth app", ("client_id", "client_secret", "refresh_token")),
        ),
        options=("owner_id",),
        labels={"access_token": ("Access token", "The private app's token, pat-…"),
                "client_id": ("Client ID", ""), "client_secret": ("Client secret", ""),
                "refresh_token": ("Refresh token", ""), "api_url": ("API URL", ""),
                "owner_id": ("Owner of logged calls", ""), "lead_lifecycle_stage": ("Lifecycle stage of leads", "")},
    ),  # fmt: skip
    "pipedrive": CrmForm(
        setup_url="https://developers.pipedrive.com/docs/api/v1/Oauth",
        setup="Simplest: the personal API token of the user crmroute acts as (Pipedrive: Personal preferences → "
              "API). For a Marketplace app, authorise it (scopes contacts:read, search:read, leads:read, "
              "activities:full) and paste its client ID, secret and refresh token.",
        methods=(
            AuthMethod("api_token", "Personal API token", ("api_token",)),
            AuthMethod("oauth", "OAuth app", ("client_id", "client_secret", "refresh_token")),
        ),
        connection=("api_url",),
        labels={"api_url": ("Company URL", "https://<company>.pipedrive.com (or https://api.pipedrive.com)."),
                "api_token": ("API token", ""), "client_id": ("Client ID", ""), "client_secret": ("Client secret", ""),
                "refresh_token": ("Refresh token", ""), "oauth_url": ("OAuth server URL", ""),
                "activity_type": ("Activity type of logged calls", ""),
                "org_phone_field": ("Organization phone field", "")},  # fmt: skip
    ),
    "salesforce": CrmForm(
        setup_url="https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/"
                  "intro_understanding_username_password_oauth_flow.htm",
        setup="In Salesforce Setup → App Manager → New Connected App: enable OAuth settings with the scopes api "
              "and refresh_token, offline_access; its Consumer Key and Secret go below. Sandboxes sign in at "
              "https://test.salesforce.com.",
        auth_field="auth_flow",
        methods=(
            AuthMethod("refresh_token", "Refresh token", (*CLIENT, "refresh_token"),
                       "From a one-time web-server sign-in to the Connected App."),
            AuthMethod("client_credentials", "Client credentials", CLIENT, "The Connected App's run-as user."),
            AuthMethod("password", "Username and password", (*CLIENT, "username", "password", "security_token")),
            AuthMethod("jwt_bearer", "JWT bearer (certificate)", ("client_id", "username", "private_key")),
        ),
        connection=("login_url",),
        options=("create_as",),
        labels={"login_url": ("Login URL", ""), "client_id": ("Consumer key", ""),
                "client_secret": ("Consumer secret", ""), "refresh_token": ("Refresh token", ""),
                "username": ("Username", ""), "password": ("Password", ""), "security_token": ("Security token", ""),
                "private_key": ("Private key (PEM)", ""), "instance_url": ("Instance URL", ""),
                "api_version": ("API version", ""), "create_as": ("Create unknown callers as", "")},  # fmt: skip
    ),
    "sugarcrm": CrmForm(
        setup_url="https://support.sugarcrm.com/Documentation/Sugar_Developer/Sugar_Developer_Guide_13.0/"
                  "Integration/Web_Services/REST_API/",
        setup="crmroute signs in as a Sugar user (password grant). The built-in OAuth key 'sugar' works; a key "
              "of your own is created under Admin → OAuth Keys. Use a user only crmroute signs in as.",
        methods=(AuthMethod("password", "User and password", ("username", "password", *CLIENT)),),
        connection=("site_url",),
        options=("create_as",),
        labels={"site_url": ("Sugar URL", ""), "username": ("Username", ""), "password": ("Password", ""),
                "client_id": ("OAuth key", ""), "client_secret": ("OAuth secret", ""),
                "api_version": ("API version", ""), "platform": ("Platform name", ""),
                "create_as": ("Create unknown callers as", "")},  # fmt: skip
    ),
    "suitecrm": CrmForm(
        setup_url="https://docs.suitecrm.com/developer/api/developer-setup-guide/configure-authentication/",
        setup="For the V8 API: in SuiteCRM Admin → OAuth2 Clients and Tokens, create a client (client "
              "credentials, or password) and copy its ID and secret before saving (the secret is hashed). The "
              "API needs its OAuth keys generated and mod_rewrite enabled.",
        auth_field="auth_flow",
        methods=(
            AuthMethod("client_credentials", "V8 OAuth client", CLIENT, sets={"api": "v8"}),
            AuthMethod("password", "V8 OAuth client and user", (*CLIENT, "username", "password"), sets={"api": "v8"}),
            AuthMethod("v4_1", "Older v4.1 API, user and password", ("username", "password"), "When V8 is not "
                       "set up.", sets={"api": "v4_1", "auth_flow": "client_credentials"}),
        ),  # fmt: skip
        connection=("site_url", "version"),
        options=("create_as",),
        labels={"site_url": ("SuiteCRM URL", ""), "version": ("SuiteCRM version", ""),
                "client_id": ("Client ID", ""), "client_secret": ("Client secret", ""), "username": ("Username", ""),
                "password": ("Password", ""), "phone_match": ("Phone matching", ""),
                "phone_fields": ("Phone fields", ""), "create_as": ("Create unknown callers as", ""),
                "assigned_user_id": ("Assign logged calls to (user ID)", "")},  # fmt: skip
    ),
    "vtiger": CrmForm(
        setup_url="https://help.vtiger.com/article/147111249-Rest-API-Manual",
        setup="Sign in to Vtiger as the user crmroute acts as, open My Preferences and copy its Access Key (not "
              "the password).",
        methods=(AuthMethod("access_key", "User and access key", ("username", "access_key")),),
        connection=("site_url",),
        options=("create_as",),
        labels={"site_url": ("Vtiger URL", ""), "username": ("Username", ""), "access_key": ("Access key", ""),
                "phone_search": ("Phone search", ""), "create_as": ("Create unknown callers as", "")},
    ),  # fmt: skip
    "zendesk": CrmForm(
        setup_url="https://developer.zendesk.com/api-reference/ticketing/oauth/grant_type_tokens/",
        setup="API token: Admin Center → Apps and integrations → Zendesk API → add a token, with the email of "
              "the agent it acts as. OAuth: an OAuth client from the same page (Zendesk now expects refresh "
              "tokens for OAuth clients).",
        auth_field="auth",
        methods=(
            AuthMethod("api_token", "API token", ("email", "api_token")),
            AuthMethod("client_credentials", "OAuth client credentials", (*CLIENT, "scope")),
            AuthMethod("refresh_token", "OAuth refresh token", (*CLIENT, "refresh_token")),
            AuthMethod("access_token", "OAuth access token", ("access_token",)),
        ),
        connection=("base_url",),
        options=("end_users_only", "call_log"),
        labels={"base_url": ("Zendesk URL", ""), "email": ("Agent email", ""), "api_token": ("API token", ""),
                "client_id": ("Client ID", ""), "client_secret": ("Client secret", ""), "scope": ("Scopes", ""),
                "refresh_token": ("Refresh token", ""), "access_token": ("Access token", ""),
                "end_users_only": ("Match end-users only", ""), "call_log": ("Log calls as", "")},  # fmt: skip
    ),
    "zoho": CrmForm(
        setup_url="https://api-console.zoho.com/",
        setup="In the Zoho API Console of your data centre (api-console.zoho.com, .eu, .in ...) add a Self Client. "
              "Generate a code with the scopes ZohoCRM.modules.ALL, ZohoSearch.securesearch.READ, "
              "ZohoCRM.settings.fields.READ and ZohoCRM.users.READ and exchange it for a refresh token; or use "
              "the Self Client's client credentials with your CRM organization ID.",
        methods=(
            AuthMethod("refresh_token", "Refresh token (Self Client or web app)", (*CLIENT, "refresh_token")),
            AuthMethod("client_credentials", "Client credentials (Self Client)", (*CLIENT, "org_id", "scope")),
        ),
        connection=("data_centre",),
        options=("create_module",),
        labels={"data_centre": ("Data centre", ""), "client_id": ("Client ID", ""),
                "client_secret": ("Client secret", ""), "refresh_token": ("Refresh token", ""),
                "org_id": ("Organization ID", ""), "scope": ("Scopes", ""), "accounts_url": ("Accounts URL", ""),
                "api_domain": ("API domain", ""), "api_version": ("API version", ""),
                "create_module": ("Create unknown callers as", "")},  # fmt: skip
    ),
    "proprietary": CrmForm(
        setup_url="https://www.rfc-editor.org/rfc/rfc6570#section-3.2.2",
        setup="Your own CRM's REST/JSON API: the lookup URL template (with {phone} or {key}), how it signs "
              "requests and where the records are in its answer. Ask its developers for an API user or token "
              "that may read the contacts.",
        auth_field="auth",
        methods=(
            AuthMethod("bearer", "Bearer token", ("token",)),
            AuthMethod("api_key", "API key header", ("token", "api_key_header")),
            AuthMethod("basic", "User and password (Basic)", ("username", "password")),
            AuthMethod("oauth2", "OAuth 2 client credentials", ("token_url", *CLIENT, "scope")),
            AuthMethod("none", "None", ()),
        ),
        connection=("lookup_url", "method", "lookup_body"),
        options=("phone_field", "phone_forms", "records_path", "id_path", "fields_path"),
        labels={"lookup_url": ("Lookup URL", ""), "method": ("Lookup method", ""),
                "lookup_body": ("Lookup body (POST)", ""),
                "token": ("Token or API key", ""), "api_key_header": ("API key header", ""),
                "token_url": ("Token URL", ""), "client_id": ("Client ID", ""), "client_secret": ("Client secret", ""),
                "phone_field": ("Phone field", ""), "phone_forms": ("Phone number forms", ""),
                "records_path": ("Records path", ""), "id_path": ("ID path", ""), "fields_path": ("Fields path", "")},
    ),  # fmt: skip
    "proprietary1": CrmForm(
        setup_url="https://url.spec.whatwg.org/#application/x-www-form-urlencoded",
        setup="Your own CRM with a login form: crmroute posts the user and password to the login URL, reads "
              "the session token from the answer and sends it with every lookup. Ask its developers for an API "
              "user and the field names.",
        methods=(AuthMethod("session", "Session login", ("login_url", "username", "password")),),
        connection=("lookup_url", "method", "lookup_form"),
        options=("phone_field", "phone_forms", "records_path", "id_path", "token_path"),
        labels={"lookup_url": ("Lookup URL", ""), "method": ("Lookup method", ""),
                "lookup_form": ("Lookup form fields", ""),
                "login_url": ("Login URL", ""), "username": ("Username", ""), "password": ("Password", ""),
                "phone_field": ("Phone field", ""), "phone_forms": ("Phone number forms", ""),
                "records_path": ("Records path", ""), "id_path": ("ID path", ""),
                "token_path": ("Session token path", "")},  # fmt: skip
    ),
}


def form_of(kind: str) -> CrmForm | None:
    return FORMS.get(kind)


def layout(kind: str, specs: list[SettingSpec]) -> dict[str, Any]:
    """The template's view of one kind: the methods with their fields, connection, options, advanced."""
    by_name = {s.name: s for s in specs}
    crm = FORMS.get(kind)
    if crm is None:  # a kind without a curated form (a new connector): every field, in the connector's order
        method = AuthMethod("default", "", ())
        return {"setup_url": "", "setup": "", "auth_field": "", "methods": [method], "method_options": [],
                "connection": [], "options": specs, "advanced": [], "method_fields": {}}  # fmt: skip
    pick = lambda names: [by_name[n] for n in names if n in by_name]  # noqa: E731
    fields: dict[str, list[str]] = {}
    for m in crm.methods:
        for name in m.fields:
            fields.setdefault(name, []).append(m.key)
    return {
        "setup_url": crm.setup_url, "setup": crm.setup, "auth_field": crm.auth_field, "methods": list(crm.methods),
        "method_options": [(m.key, m.label) for m in crm.methods],
        "connection": pick(crm.connection), "options": pick(crm.options),
        "advanced": pick(crm.advanced(specs)), "method_fields": {n: (by_name[n], keys) for n, keys in fields.items()
                                                                if n in by_name},
    }  # fmt: skip


def read_fields(kind: str, specs: list[SettingSpec], method_key: str) -> tuple[list[SettingSpec], dict[str, str]]:
    """The settings a save reads for this method, and the settings the method fixes (its auth value...)."""
    crm = FORMS.get(kind)
    if crm is None:
        return specs, {}
    method = crm.method(method_key)
    keep = set(method.fields) | set(crm.connection) | set(crm.options) | set(crm.advanced(specs))
    fixed = dict(method.sets)
    if crm.auth_field:
        fixed.setdefault(crm.auth_field, method.key)
    return [s for s in specs if s.name in keep and s.name not in fixed], fixed
