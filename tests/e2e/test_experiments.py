"""A canary experiment under the official SDKs: half the traffic goes to a candidate in
another wire format that fails 30% of the time; every call (plain, streamed, with tools,
on both surfaces) succeeds, the candidate's failures are rescued by the baseline and
counted against the candidate, and feedback joins by request id."""

from __future__ import annotations

import json
import time

import httpx

from conftest import FULL_KEY
from helpers import ANTHROPIC_TOOLS, OPENAI_TOOLS, TOOL_NAME, echo

ADMIN = "asc-e2e-admin-token-0000000000000"


def admin_url(gateway) -> str:
    cfg = gateway.config_path.read_text()
    port = cfg.split("admin_listen: 127.0.0.1:")[1].split()[0]
    return f"http://127.0.0.1:{port}"


def test_sdks_never_see_a_failing_candidate(gateway, oai, ant):
    seen = []  # (arm, provider)
    ids = []
    for i in range(30):
        raw = oai.chat.completions.with_raw_response.create(
            model="canary",
            messages=[{"role": "user", "content": f"hello {i}"}],
            extra_headers={"x-asc-user": f"oai-user-{i}"},
        )
        reply = raw.parse()
        assert reply.choices[0].message.content == echo(f"hello {i}")
        seen.append((raw.headers["x-asc-experiment"], raw.headers["x-asc-provider"]))
        ids.append(raw.headers["x-asc-request-id"])
    for i in range(10):
        stream = oai.chat.completions.create(
            model="canary",
            stream=True,
            messages=[{"role": "user", "content": f"stream {i}"}],
            extra_headers={"x-asc-user": f"oai-stream-{i}"},
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == echo(f"stream {i}")
    for i in range(5):
        reply = oai.chat.completions.create(
            model="canary",
            messages=[{"role": "user", "content": f"tool {i}"}],
            tools=OPENAI_TOOLS,
            extra_headers={"x-asc-user": f"oai-tool-{i}"},
        )
        call = reply.choices[0].message.tool_calls[0]
        assert call.function.name == TOOL_NAME
        assert json.loads(call.function.arguments) == {"input": f"tool {i}"}
    for i in range(10):
        msg = ant.messages.create(
            model="canary",
            max_tokens=50,
            messages=[{"role": "user", "content": f"anthropic {i}"}],
            extra_headers={"x-asc-user": f"ant-user-{i}"},
        )
        assert msg.content[0].text == echo(f"anthropic {i}")
    for i in range(5):
        extra = {"tools": ANTHROPIC_TOOLS} if i % 2 else {}
        with ant.messages.stream(
            model="canary",
            max_tokens=50,
            messages=[{"role": "user", "content": f"ant stream {i}"}],
            extra_headers={"x-asc-user": f"ant-stream-{i}"},
            **extra,
        ) as s:
            final = s.get_final_message()
        if i % 2:
            assert final.content[0].type == "tool_use"
        else:
            assert final.content[0].text == echo(f"ant stream {i}")

    arms = {arm for arm, _ in seen}
    assert arms == {"sdk-canary/baseline", "sdk-canary/candidate"}, seen
    assert ("sdk-canary/candidate", "cand-flaky") in seen, "the candidate served some"
    assert ("sdk-canary/candidate", "mock-us") in seen, "a candidate failure was rescued"
    assert all(p == "mock-us" for arm, p in seen if arm == "sdk-canary/baseline")

    # Feedback for one of them, joined by request id (records land within half a second).
    fb = None
    for _ in range(20):
        fb = httpx.post(
            gateway.base_url + "/v1/feedback",
            headers={"Authorization": f"Bearer {FULL_KEY}"},
            json={"request_id": ids[0], "score": 0.7},
        )
        if fb.status_code != 404:
            break
        time.sleep(0.1)
    assert fb is not None and fb.status_code == 200, fb.text

    status = httpx.get(
        admin_url(gateway) + "/admin/v1/experiments/sdk-canary",
        headers={"Authorization": f"Bearer {ADMIN}"},
    ).json()
    assert status["state"] == "running", status
    cand, base = status["arms"]["candidate"], status["arms"]["baseline"]
    assert cand["requests"] + base["requests"] == 60, status
    assert cand["errors"] > 0, "rescued failures count against the candidate"
    assert base["errors"] == 0
