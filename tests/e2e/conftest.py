"""End-to-end fixtures: real `asc` processes, official SDKs as clients.

One session starts three external mock providers (`asc mock-provider`, one per flavor,
each requiring its own API key) and one gateway (`asc serve`) whose config points at
them and at a few in-process mocks. Every process is terminated at the end of the
session, also when a test or the setup fails.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# Keys of the tenants (static keys in the config).
FULL_KEY = "sk-asc-e2e-full-000000000000000000"  # every model, regions us+eu
RESTRICTED_KEY = "sk-asc-e2e-restricted-00000000000"  # allowed_models: [gpt, claude]
EU_KEY = "sk-asc-e2e-eu-0000000000000000000000"  # every model, region eu only

# Admin tokens (static tokens in the config).
ADMIN_TOKEN = "asc-e2e-admin-token-0000000000000"
AUDITOR_TOKEN = "asc-e2e-auditor-token-00000000000"

# Keys the external mock providers require from the gateway.
UPSTREAM_KEYS = {
    "openai": "sk-upstream-openai-e2e",
    "anthropic": "sk-ant-upstream-anthropic-e2e",
    "mistral": "mistral-upstream-e2e",
}

# Gateway model name -> flavor of the (external) mock behind it.
FLAVOR_MODEL = {"openai": "gpt", "anthropic": "claude", "mistral": "mistral"}
FLAVORS = list(FLAVOR_MODEL)

# Every model the full tenant may use: the declared ones, plus the implicit ones (the
# gateway makes every provider model named by a target or fallback requestable by that
# name, so that allow-list patterns such as "mistral-*" mean something).
DECLARED_MODELS = {
    "gpt",
    "claude",
    "mistral",
    "embed",
    "embed-mistral",
    "resilient",
    "broken",
    "us-only",
    "canary",
}
IMPLICIT_MODELS = {
    "gpt-4o-mini",  # ext-openai, mock-us, flaky-primary, dead-a: all us
    "claude-3-5-haiku-latest",  # ext-anthropic (us), dead-b (eu)
    "mistral-small-latest",  # ext-mistral (eu), mock-eu (eu)
    "text-embedding-3-small",  # ext-openai (us)
    "mistral-embed",  # ext-mistral (eu)
    "canary-candidate-1",  # cand-flaky (us): the experiment's candidate
}
ALL_MODELS = DECLARED_MODELS | IMPLICIT_MODELS
# allowed_models: [gpt, claude] (exact names, so no implicit model).
RESTRICTED_MODELS = {"gpt", "claude"}
# Models with at least one target (primary or fallback) in region eu.
EU_MODELS = {
    "mistral",
    "embed-mistral",
    "resilient",
    "broken",
    "claude-3-5-haiku-latest",
    "mistral-small-latest",
    "mistral-embed",
}

MAX_BODY_BYTES = 65536


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args} exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"process {proc.args} did not listen on {port} within {timeout}s")


def wait_for_healthz(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited early with {proc.returncode}")
        try:
            r = httpx.get(url, timeout=1.0)
            if r.status_code == 200:
                return
            last = r.status_code
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"gateway not healthy within {timeout}s (last: {last})")


def find_binary() -> Path:
    raw = os.environ.get("ASC_BIN", "target/debug/asc")
    path = Path(raw)
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.is_file():
        pytest.exit(
            f"asc binary not found at {path}; build it with `cargo build -p asc` or set ASC_BIN",
            returncode=2,
        )
    return path


@dataclass
class Gateway:
    base_url: str  # http://127.0.0.1:PORT (no /v1)
    admin_base: str  # http://127.0.0.1:ADMIN_PORT
    config_path: Path
    log_path: Path
    mock_ports: dict[str, int] = field(default_factory=dict)

    @property
    def openai_base(self) -> str:
        return self.base_url + "/v1"

    def openai(self, key: str = FULL_KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.openai_base, api_key=key, max_retries=0, timeout=30)

    def anthropic(self, key: str = FULL_KEY) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.base_url, api_key=key, max_retries=0, timeout=30)


def gateway_config(tmp: Path, listen: int, admin: int, mock_ports: dict[str, int]) -> str:
    o, a, m = mock_ports["openai"], mock_ports["anthropic"], mock_ports["mistral"]
    return f"""\
server:
  listen: 127.0.0.1:{listen}
  admin_listen: 127.0.0.1:{admin}
  max_body_bytes: {MAX_BODY_BYTES}
storage:
  database: sqlite://{tmp}/asc.db
audit:
  durability: batched
  signing_key_file: {tmp}/audit-signing.key
admin:
  tokens:
    - {{name: e2e-admin, token: "{ADMIN_TOKEN}", role: platform_admin}}
    - {{name: e2e-auditor, token: "{AUDITOR_TOKEN}", role: auditor}}
providers:
  - {{name: ext-openai, kind: openai, base_url: "http://127.0.0.1:{o}/v1", api_key: "{UPSTREAM_KEYS['openai']}", region: us}}
  - {{name: ext-anthropic, kind: anthropic, base_url: "http://127.0.0.1:{a}", api_key: "{UPSTREAM_KEYS['anthropic']}", region: us}}
  - {{name: ext-mistral, kind: mistral, base_url: "http://127.0.0.1:{m}/v1", api_key: "{UPSTREAM_KEYS['mistral']}", region: eu}}
  - {{name: mock-us, kind: mock, flavor: openai, region: us}}
  - {{name: mock-eu, kind: mock, flavor: mistral, region: eu}}
  - {{name: flaky-primary, kind: mock, flavor: openai, region: us, fail_rate: 1.0, fail_status: 500}}
  - {{name: dead-a, kind: mock, flavor: openai, region: us, fail_rate: 1.0, fail_status: 500}}
  - {{name: dead-b, kind: mock, flavor: anthropic, region: eu, fail_rate: 1.0, fail_status: 500}}
  - {{name: cand-flaky, kind: mock, flavor: anthropic, region: us, fail_rate: 0.3, fail_status: 529, seed: 5}}
models:
  - name: gpt
    targets:
      - {{provider: ext-openai, model: gpt-4o-mini}}
  - name: claude
    targets:
      - {{provider: ext-anthropic, model: claude-3-5-haiku-latest}}
  - name: mistral
    targets:
      - {{provider: ext-mistral, model: mistral-small-latest}}
  - name: embed
    targets:
      - {{provider: ext-openai, model: text-embedding-3-small}}
  - name: embed-mistral
    targets:
      - {{provider: ext-mistral, model: mistral-embed}}
  - name: resilient
    circuit_breaker: {{consecutive_failures: 100000, error_rate: 1.0, window: 1000}}
    targets:
      - {{provider: flaky-primary, model: gpt-4o-mini}}
    fallbacks:
      - {{provider: mock-eu, model: mistral-small-latest}}
    retries: 0
  - name: broken
    circuit_breaker: {{consecutive_failures: 100000, error_rate: 1.0, window: 1000}}
    targets:
      - {{provider: dead-a, model: gpt-4o-mini}}
    fallbacks:
      - {{provider: dead-b, model: claude-3-5-haiku-latest}}
    retries: 0
  - name: us-only
    targets:
      - {{provider: mock-us, model: gpt-4o-mini}}
  - name: canary
    targets:
      - {{provider: mock-us, model: gpt-4o-mini}}
experiments:
  # Half the full tenant's `canary` traffic goes to an Anthropic-format candidate that
  # fails 30% of the time (overloaded, 529): the SDKs must never notice. Margins are wide
  # so that it keeps running for the whole session.
  - name: sdk-canary
    model: canary
    tenants: [full]
    candidate: {{provider: cand-flaky, model: canary-candidate-1}}
    sticky_by: [user]
    stages: [{{weight: 50, min_requests: 1000000}}]
    guards: {{error_rate: {{max_ratio: 1000}}}}
    breaker: {{max_error_rate: 1.0, window: 1000}}
tenants:
  - name: full
    allowed_models: ["*"]
    regions: [us, eu]
    keys:
      - {{name: e2e, key: "{FULL_KEY}"}}
  - name: restricted
    allowed_models: [gpt, claude]
    regions: [us, eu]
    keys:
      - {{name: e2e, key: "{RESTRICTED_KEY}"}}
  - name: eu
    allowed_models: ["*"]
    regions: [eu]
    keys:
      - {{name: e2e, key: "{EU_KEY}"}}
"""


def _terminate(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory) -> Gateway:
    binary = find_binary()
    tmp = tmp_path_factory.mktemp("asc-e2e")
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        mock_ports: dict[str, int] = {}
        for flavor in FLAVORS:
            port = free_port()
            log = open(tmp / f"mock-{flavor}.log", "wb")
            logs.append(log)
            p = subprocess.Popen(
                [
                    str(binary),
                    "mock-provider",
                    "--flavor",
                    flavor,
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--api-key",
                    UPSTREAM_KEYS[flavor],
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp,
            )
            procs.append(p)
            mock_ports[flavor] = port
        for flavor, p in zip(FLAVORS, procs):
            wait_for_port(mock_ports[flavor], p)

        listen, admin = free_port(), free_port()
        config_path = tmp / "asc.yaml"
        config_path.write_text(gateway_config(tmp, listen, admin, mock_ports))

        check = subprocess.run(
            [str(binary), "check-config", "--config", str(config_path)],
            capture_output=True,
            text=True,
            cwd=tmp,
        )
        if check.returncode != 0:
            raise RuntimeError(f"check-config failed ({check.returncode}):\n{check.stdout}{check.stderr}")

        log_path = tmp / "gateway.log"
        log = open(log_path, "wb")
        logs.append(log)
        gw = subprocess.Popen(
            [str(binary), "serve", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
        procs.append(gw)
        base = f"http://127.0.0.1:{listen}"
        try:
            wait_for_healthz(base + "/healthz", gw)
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n--- gateway log ---\n{log_path.read_text(errors='replace')}") from None

        yield Gateway(
            base_url=base,
            admin_base=f"http://127.0.0.1:{admin}",
            config_path=config_path,
            log_path=log_path,
            mock_ports=mock_ports,
        )
    finally:
        _terminate(procs)
        for log in logs:
            log.close()


@pytest.fixture
def oai(gateway: Gateway) -> openai.OpenAI:
    return gateway.openai()


@pytest.fixture
def ant(gateway: Gateway) -> anthropic.Anthropic:
    return gateway.anthropic()


@pytest.fixture(params=FLAVORS)
def flavor(request) -> str:
    return request.param


@pytest.fixture
def model(flavor: str) -> str:
    return FLAVOR_MODEL[flavor]
