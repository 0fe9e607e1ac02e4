"""deploy/.env.example lists every setting with its default and meaning, and stays in sync."""

import pytest
from imctl.envdoc import ENV_EXAMPLE, SETTINGS, _load, render

pytestmark = pytest.mark.unit


def test_the_committed_env_example_matches_the_settings_classes():
    assert ENV_EXAMPLE.read_text() == render(), "settings changed: run `.venv/bin/imctl env-example`"


def test_every_setting_of_every_service_is_listed_with_no_default_secret():
    text = ENV_EXAMPLE.read_text()
    names = [line.split("=", 1)[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert len(names) == len(set(names)), "each setting once"
    for _, path in SETTINGS:
        cls = _load(path)
        prefix = cls.model_config.get("env_prefix", "")
        for name, field in cls.model_fields.items():
            if field.validation_alias is None:
                assert f"{prefix}{name}".upper() in names, (path, name)
    assert "IM_JWT_SECRET=\n" in text, "no default secret"
