"""The deployment files: docker-compose.yml is valid and names files that exist."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_compose_file_is_valid() -> None:
    if not shutil.which("docker-compose"):
        pytest.skip("docker-compose is not installed (.ci/run installs it)")
    result = subprocess.run(["docker-compose", "-f", str(PROJECT / "docker-compose.yml"),
                             "config", "-q"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_dockerfile_copies_existing_files_and_compose_uses_the_code_location() -> None:
    dockerfile = (PROJECT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (.+) \S+$", dockerfile, flags=re.M):
        for name in source.split():
            assert (PROJECT / name).exists(), name
    compose = yaml.safe_load((PROJECT / "docker-compose.yml").read_text())
    assert {"postgres", "user_code", "webserver", "daemon"} <= set(compose["services"])
    assert "etl_assets.definitions" in compose["services"]["user_code"]["command"]
    workspace = yaml.safe_load((PROJECT / "docker" / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["grpc_server"]["host"] == "user_code"
