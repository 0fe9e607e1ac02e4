"""Without a Docker engine and without podman, `imctl compose up` stops at once and says what to
install — never a half-started stack or a skipped test."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def test_compose_up_without_docker_or_podman_fails_naming_what_to_install(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path), "IM_JWT_SECRET": "x" * 32,  # no docker, podman, runc
           "IM_RUN_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "imctl", "compose", "up", "--project", "imtestnone"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "no Docker engine answers" in result.stderr
    assert "podman" in result.stderr and "runc" in result.stderr and "make setup" in result.stderr


def test_compose_up_with_a_secret_the_services_would_refuse_says_so_at_once(tmp_path):
    """Not after waiting out the start-up timeout while every service crash-loops on it."""
    env = {**os.environ, "IM_JWT_SECRET": "short", "IM_RUN_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "imctl", "compose", "up", "--project", "imtestshort"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "IM_JWT_SECRET is not usable" in result.stderr and "at least 16" in result.stderr
    assert "building the images" not in result.stdout + result.stderr  # nothing was started


def test_the_image_build_without_podman_fails_naming_the_tool(tmp_path):
    script = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "offline", "build-images.sh")
    bash = "/bin/bash"
    result = subprocess.run([bash, script], env={**os.environ, "PATH": str(tmp_path)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "'podman' is not installed" in result.stderr and "make setup" in result.stderr


def test_compose_up_with_a_password_that_cannot_go_into_a_uri_says_so_at_once(tmp_path):
    env = {**os.environ, "IM_JWT_SECRET": "x" * 32, "IM_MONGO_PASSWORD": "has@and/in-it-0123456789",
           "IM_RUN_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "imctl", "compose", "up", "--project", "imtestpw"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "IM_MONGO_PASSWORD: use 16 or more letters, digits" in result.stderr
    assert "building the images" not in result.stdout + result.stderr  # nothing was started


def test_the_stacks_passwords_are_made_once_kept_private_and_overridden_by_the_environment(tmp_path, monkeypatch):
    from imctl.compose import PASSWORDS, PASSWORDS_FILE, compose_passwords, password_problems

    for name in PASSWORDS:
        monkeypatch.delenv(name, raising=False)
    first = compose_passwords(tmp_path, lambda line: None)
    assert set(first) == set(PASSWORDS) and len(set(first.values())) == len(PASSWORDS)
    assert password_problems(first) == []
    assert (tmp_path / PASSWORDS_FILE).stat().st_mode & 0o777 == 0o600
    assert compose_passwords(tmp_path, lambda line: None) == first  # the volumes' users keep working

    monkeypatch.setenv("IM_MONGO_PASSWORD", "chosen-by-the-operator-0123")
    chosen = compose_passwords(tmp_path, lambda line: None)
    assert chosen == {**first, "IM_MONGO_PASSWORD": "chosen-by-the-operator-0123"}
