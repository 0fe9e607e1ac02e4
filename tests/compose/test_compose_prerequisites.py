"""Without a Docker engine and without podman, `imctl compose up` stops at once and says what to
install — never a half-started stack or a skipped test."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def test_compose_up_without_docker_or_podman_fails_naming_what_to_install(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path), "IM_JWT_SECRET": "x" * 32}  # no docker, podman, runc
    result = subprocess.run([sys.executable, "-m", "imctl", "compose", "up", "--project", "imtestnone"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "no Docker engine answers" in result.stderr
    assert "podman" in result.stderr and "runc" in result.stderr and "make setup" in result.stderr


def test_compose_up_with_a_secret_the_services_would_refuse_says_so_at_once(tmp_path):
    """Not after waiting out the start-up timeout while every service crash-loops on it."""
    env = {**os.environ, "IM_JWT_SECRET": "short"}
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
