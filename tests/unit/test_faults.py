import pytest

from sandbox.faults import Fault, FaultError, check_applies, parse


@pytest.mark.parametrize(
    ("text", "fault"),
    [("ok", Fault("ok")), ("down", Fault("down")), ("hang", Fault("hang")), ("slow:1.5", Fault("slow", seconds=1.5)),
     ("status:503", Fault("status", status=503)), ("stale", Fault("stale")), ("wrong-chain", Fault("wrong-chain"))],
)
def test_modes_parse_and_print_back(text, fault):
    assert parse(text) == fault
    assert str(parse(text)) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [("slow:x", "needs a number"), ("status:99", "100-599"), ("status:", "100-599"), ("down:1", "no argument"),
     ("explode", "unknown fault mode")],
)
def test_bad_modes_say_what_is_wrong(text, message):
    with pytest.raises(FaultError, match=message):
        parse(text)


def test_chain_modes_only_apply_to_rpc_endpoints_and_low_only_to_wallets():
    check_applies("rpc", parse("stale"))
    with pytest.raises(FaultError, match="only to RPC"):
        check_applies("http", parse("wrong-chain"))
    with pytest.raises(FaultError, match="only to wallet"):
        check_applies("rpc", parse("low"))
    with pytest.raises(FaultError, match="'low' and 'ok'"):
        check_applies("wallet", parse("down"))
