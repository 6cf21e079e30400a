"""The `userpilot-emulator` command: documented options, serving, stopping on a signal."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from target_userpilot.emulator.cli import main

OPTIONS = [
    "--host",
    "--port",
    "--allow-remote",
    "--token",
    "--account",
    "--quiet",
    "--rows-per-minute",
    "--queued-seconds",
    "--job-id-style",
    "--progress-fields",
    "--submit-status",
    "--seed",
    "--fail-rate",
    "--fault-kinds",
    "--retry-after-seconds",
    "--slow-seconds",
    "--fail-jobs",
    "--drop-submit-responses",
    "--reject-id",
    "--foreign-job-seconds",
    "--profile",
    "--validating-seconds",
    "--pending-refresh-seconds",
    "--job-list-page-size",
    "--export-job",
    "--retry-after-share",
    "--max-value-chars",
    "--string-values-only",
    "--reject-key",
    "--refuse-uploads",
    "--refuse-multipart",
    "--proxy-body-limit",
]


def command() -> list[str]:
    script = Path(sys.executable).parent / "userpilot-emulator"
    if script.exists():
        return [str(script)]
    found = shutil.which("userpilot-emulator")
    return [found] if found else [sys.executable, "-m", "target_userpilot.emulator"]


def test_help_documents_every_option() -> None:
    run = subprocess.run([*command(), "--help"], capture_output=True, text=True, check=True)
    for option in OPTIONS:
        assert option in run.stdout, option
    assert "api_url" in run.stdout


def test_a_non_loopback_host_is_refused_without_allow_remote() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "target_userpilot.emulator", "--host", "0.0.0.0", "--port", "0"],  # noqa: S104
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert run.returncode == 2
    assert "--allow-remote" in run.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serves_logs_and_stops_on_a_signal(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [
            *command(),
            "--port",
            "0",
            "--token",
            "cli-token",
            "--profile",
            "legacy",
            "--rows-per-minute",
            "inf",
            "--job-id-style",
            "bulk",
            "--reject-id",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        auth = {"Authorization": "Token cli-token"}
        body = "".join(json.dumps({"user_id": str(i)}) + "\n" for i in range(3))
        r = requests.post(
            url + "/v1/users/bulk_identify",
            files={"file": ("u.ndjson", body)},
            headers=auth,
            timeout=5,
        )
        assert r.status_code == 200
        job_id = r.json()["job_id"]
        assert job_id.startswith("bulk:jobs:")
        job = requests.get(f"{url}/v1/background_jobs/{job_id}", headers=auth, timeout=5).json()
        assert job["error_count"] == 1
        assert requests.get(url + "/v1/background_jobs/", timeout=5).status_code == 401
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "POST /v1/users/bulk_identify -> 200" in stderr
    assert f"job {job_id} (users, 3 rows) completed" in stderr
    assert "GET /v1/background_jobs/ -> 401" in stderr
    assert "stopped" in stderr
    assert "cli-token" not in stderr
    assert "Traceback" not in stderr


def test_a_port_out_of_range_is_one_usage_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--port", "99999"])
    assert stopped.value.code == 2
    assert "--port: must be 0 to 65535" in capsys.readouterr().err
