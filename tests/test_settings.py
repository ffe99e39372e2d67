"""Settings from CRMROUTE_* variables: defaults of SPEC 10, errors naming the variable."""

from __future__ import annotations

import ipaddress
import stat

import pytest
from cryptography.fernet import Fernet

from crmroute.errors import ConfigError
from crmroute.settings import Settings
from crmroute.store.secrets import SecretBox


def test_defaults():
    settings = Settings.from_env({})
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8080)
    assert (settings.agi_host, settings.agi_port) == ("127.0.0.1", 4573)
    assert settings.deadline_ms == 2500
    assert settings.default_region == "US"
    assert (settings.jump_mode, settings.jump_preset) == ("goto", "asterisk")
    assert str(settings.data_dir) == "data"
    assert settings.db_url.startswith("sqlite:///") and settings.db_url.endswith("data/crmroute.db")
    assert ipaddress.ip_address("127.0.0.1") in settings.agi_allow[0]
    assert settings.license_key == "" and settings.ca_bundle is None


def test_values_are_read():
    settings = Settings.from_env({
        "CRMROUTE_DATABASE_URL": "postgresql://u@h/db",
        "CRMROUTE_AGI_ALLOW": "10.0.0.0/8, 192.0.2.7",
        "CRMROUTE_DEADLINE_MS": "800",
        "CRMROUTE_JUMP_MODE": "variables",
        "CRMROUTE_JUMP_PRESET": "FreePBX",
        "CRMROUTE_JUMP_QUEUE": "q,{dest},1",
        "CRMROUTE_DEFAULT_REGION": "gb",
        "CRMROUTE_LOG_LEVEL": "debug",
    })  # fmt: skip
    assert settings.db_url == "postgresql://u@h/db"
    assert [str(n) for n in settings.agi_allow] == ["10.0.0.0/8", "192.0.2.7/32"]
    assert settings.deadline_ms == 800
    assert settings.jump_preset == "freepbx" and settings.jump_mode == "variables"
    assert settings.jump_overrides == {"queue": "q,{dest},1"}
    assert settings.default_region == "GB" and settings.log_level == "DEBUG"


def test_every_bad_variable_is_named(tmp_path):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({
            "CRMROUTE_AGI_PORT": "x",
            "CRMROUTE_HTTP_PORT": "70000",
            "CRMROUTE_AGI_ALLOW": "nonsense",
            "CRMROUTE_JUMP_MODE": "teleport",
            "CRMROUTE_CA_BUNDLE": str(tmp_path / "missing.pem"),
            "CRMROUTE_JUMP_IVR": "only-context",
            "CRMROUTE_DEADLINE_MS": "10",
        })  # fmt: skip
    fields = [field for field, _ in caught.value.problems]
    assert fields == [
        "CRMROUTE_AGI_ALLOW", "CRMROUTE_CA_BUNDLE", "CRMROUTE_JUMP_IVR", "CRMROUTE_HTTP_PORT",
        "CRMROUTE_AGI_PORT", "CRMROUTE_JUMP_MODE", "CRMROUTE_DEADLINE_MS",
    ]  # fmt: skip


def test_secret_key_is_generated_once_with_mode_0600(tmp_path):
    settings = Settings.from_env({"CRMROUTE_DATA_DIR": str(tmp_path / "new" / "data")})
    box = SecretBox.from_settings(settings)
    key_file = settings.data_dir / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    token = box.encrypt("hunter2")
    assert "hunter2" not in token
    assert SecretBox.from_settings(settings).decrypt(token) == "hunter2"  # same key next run


def test_secret_key_from_environment(tmp_path):
    key = Fernet.generate_key().decode()
    settings = Settings.from_env({"CRMROUTE_DATA_DIR": str(tmp_path), "CRMROUTE_SECRET_KEY": key})
    token = SecretBox.from_settings(settings).encrypt("x")
    assert Fernet(key).decrypt(token.encode()) == b"x"
    assert not (tmp_path / "secret.key").exists()
    with pytest.raises(ConfigError) as caught:
        SecretBox("not a key")
    assert caught.value.problems[0][0] == "CRMROUTE_SECRET_KEY"


def test_wrong_key_is_a_clear_error():
    token = SecretBox(Fernet.generate_key()).encrypt("x")
    other = SecretBox(Fernet.generate_key())
    with pytest.raises(ConfigError, match="secret key changed"):
        other.decrypt(token)


def test_trusted_proxies_and_metrics_token():
    default = Settings.from_env({})
    assert default.trusted_proxies == () and default.metrics_token == ""
    settings = Settings.from_env({"CRMROUTE_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7",
                                  "CRMROUTE_METRICS_TOKEN": "scrape-me"})  # fmt: skip
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "192.0.2.7/32"]
    assert settings.metrics_token == "scrape-me" and "scrape-me" not in repr(settings)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CRMROUTE_TRUSTED_PROXIES": "proxy.example"})
    assert [field for field, _ in caught.value.problems] == ["CRMROUTE_TRUSTED_PROXIES"]


def test_ami_sources_name_each_asterisk():
    from crmroute.settings import AmiSource

    env = {"CRMROUTE_AMI_SOURCES": "pbx1=10.0.0.11:5039, pbx2=10.0.0.12,pbx3=[::1]:5040",
           "CRMROUTE_AMI_USERNAME": "crm"}  # fmt: skip
    settings = Settings.from_env(env)
    assert settings.ami_list == (AmiSource("pbx1", "10.0.0.11", 5039), AmiSource("pbx2", "10.0.0.12", 5038),
                                 AmiSource("pbx3", "::1", 5040))  # fmt: skip
    assert settings.ami_enabled
    legacy = Settings.from_env({"CRMROUTE_AMI_HOST": "10.0.0.5", "CRMROUTE_AMI_USERNAME": "crm"})
    assert legacy.ami_list == (AmiSource("default", "10.0.0.5", 5038),)


@pytest.mark.parametrize(("value", "message"), [
    ("pbx1", "'pbx1' is not NAME=HOST[:PORT]"),
    ("pbx 1=10.0.0.1", "a PBX name is 1-32 letters"),
    ("a=h1,a=h2", "'a' is named twice"),
    ("a=h1:99999", "the port must be a number from 1 to 65535"),
])  # fmt: skip
def test_bad_ami_sources_name_the_setting(value, message):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CRMROUTE_AMI_SOURCES": value, "CRMROUTE_AMI_USERNAME": "crm"})
    assert any(field == "CRMROUTE_AMI_SOURCES" and message in text for field, text in caught.value.problems)


def test_ami_sources_and_host_are_one_or_the_other():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CRMROUTE_AMI_SOURCES": "a=h1", "CRMROUTE_AMI_HOST": "h2", "CRMROUTE_AMI_USERNAME": "u"})
    assert [f for f, _ in caught.value.problems] == ["CRMROUTE_AMI_SOURCES"]


def test_node_id_defaults_to_host_name_and_agi_port():
    import socket

    assert Settings.from_env({"CRMROUTE_AGI_PORT": "4599"}).node == f"{socket.gethostname()}:4599"
    assert Settings.from_env({"CRMROUTE_NODE_ID": "node-a"}).node == "node-a"
