import httpx
import pytest

from runbook.clients.http_probe import BodyTooLarge, read_limited
from runbook.clients.ratelimits import vendor_get


def client_serving(body: bytes) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(200, content=body)))


async def test_a_body_within_the_limit_is_read_whole():
    async with client_serving(b"x" * 1000) as client, client.stream("GET", "http://v.test/") as response:
        assert await read_limited(response, 1000) == b"x" * 1000


async def test_a_body_past_the_limit_is_refused():
    async with client_serving(b"x" * 4096) as client, client.stream("GET", "http://v.test/") as response:
        with pytest.raises(BodyTooLarge, match="larger than 2 KiB"):
            await read_limited(response, 2048)


async def test_a_vendor_answer_too_large_is_an_error_not_a_crash():
    from pydantic import SecretStr

    from runbook.clients.ratelimits import MAX_BODY_BYTES

    async with client_serving(b"{" + b" " * MAX_BODY_BYTES + b"}") as client:
        answer = await vendor_get(
            client, "http://v.test/key", {}, timeout_s=5, secret=SecretStr("k"), vendor="coingecko"
        )
    assert answer.error == f"coingecko: the answer is larger than {MAX_BODY_BYTES // 1024:,} KiB"
    assert answer.body in (b"", None)
