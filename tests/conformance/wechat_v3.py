"""WeChat Pay API v3 against the sandbox mock, through the third-party client `wechatpayv3` (PyPI),
unchanged. Usage: wechat_v3.py SANDBOX_JSON certificate|public-key"""

import json
import sys
import time
import uuid

import requests
import requests.api
from wechatpayv3 import WeChatPay, WeChatPayType

from checks import Checks, Receiver, header_names_deviation, manifest, post_json, read

PRODUCTION = "https://api.mch.weixin.qq.com"
ANSWER_HEADERS = [
    "Wechatpay-Timestamp",
    "Wechatpay-Nonce",
    "Wechatpay-Signature",
    "Wechatpay-Serial",
    "Wechatpay-Signature-Type",
    "Request-ID",
]
NOTIFY_HEADERS = ANSWER_HEADERS[:5]


def main():
    sandbox, mode = manifest(sys.argv[1]), sys.argv[2]
    wx = sandbox["channels"]["wechat"]
    c = Checks(f"wechat {mode}")

    # The client talks to WeChat's production host; point it at the mock the way a proxy would,
    # and keep each answer to read its header names as they came over the wire.
    answers = []
    send = requests.api.request

    def to_mock(method, url, **kwargs):
        res = send(method, url.replace(PRODUCTION, wx["mock_url"]), **kwargs)
        answers.append(res)
        return res

    requests.api.request = to_mock

    receiver = Receiver()
    keys = {}
    if mode == "public-key":
        keys = {"public_key": read(wx["platform_public_key"]), "public_key_id": wx["platform_public_key_id"]}
    client = c.run(
        "the client starts (certificate mode downloads and decrypts /v3/certificates)",
        lambda: WeChatPay(
            wechatpay_type=WeChatPayType.NATIVE,
            mchid=wx["mchid"],
            private_key=read(wx["merchant_private_key"]),
            cert_serial_no=wx["merchant_serial"],
            appid=wx["appid"],
            apiv3_key=wx["apiv3_key"],
            notify_url=receiver.url + "/notify",
            **keys,
        ),
    )
    if client is None:
        c.finish()

    def names_of_last():
        return list(answers[-1].headers.keys())

    no = "cf" + uuid.uuid4().hex[:24]
    code, msg = c.run("native order is accepted and its answer verified", lambda: client.pay(
        description="conformance", out_trade_no=no, amount={"total": 100, "currency": "CNY"})) or (0, "")
    c.check("native order answers 200 with a code_url", code == 200 and "code_url" in str(msg),
            f"status {code}, body {msg!r}")
    dev = header_names_deviation(names_of_last(), ANSWER_HEADERS)
    c.check("answer header names in WeChat's case (a case-sensitive SDK finds them)", not dev, dev)

    code, msg = c.run("query before paying is verified", lambda: client.query(out_trade_no=no)) or (0, "{}")
    c.check("query before paying says NOTPAY", code == 200 and json.loads(msg).get("trade_state") == "NOTPAY",
            f"status {code}, body {msg!r}")

    post_json(f"{wx['mock_url']}/_sandbox/orders/{no}/pay")
    note = receiver.wait(lambda r: r["path"] == "/notify")
    c.check("the payment notification arrives at notify_url", note is not None, "nothing posted within 15 s")
    if note:
        names = [k for k, _ in note["headers"]]
        dev = header_names_deviation(names, NOTIFY_HEADERS)
        c.check("notification header names in WeChat's case", not dev, dev)
        # Handed over as a case-sensitive map, as a framework that keeps names as sent would.
        try:
            data = client.callback(dict(note["headers"]), note["body"])
            refusal = "the client refused the notification's signature or could not decrypt it"
        except Exception as e:
            data, refusal = None, f"{type(e).__name__}: {e}"
        c.check("the client verifies and decrypts the notification", data is not None, refusal)
        resource = (data or {}).get("resource", {})
        c.check("the notification says SUCCESS for the order and its amount",
                resource.get("out_trade_no") == no and resource.get("trade_state") == "SUCCESS"
                and resource.get("amount", {}).get("total") == 100,
                f"verification failed or wrong content: {data!r}")

    code, msg = c.run("query after paying is verified", lambda: client.query(out_trade_no=no)) or (0, "{}")
    c.check("query after paying says SUCCESS", code == 200 and json.loads(msg).get("trade_state") == "SUCCESS",
            f"status {code}, body {msg!r}")

    refund_no = "rf" + uuid.uuid4().hex[:24]
    code, msg = c.run("refund is accepted and its answer verified", lambda: client.refund(
        out_refund_no=refund_no, amount={"refund": 30, "total": 100, "currency": "CNY"}, out_trade_no=no)) or (0, "{}")
    c.check("refund answers 200 PROCESSING or SUCCESS",
            code == 200 and json.loads(msg).get("status") in ("PROCESSING", "SUCCESS"), f"status {code}, body {msg!r}")

    deadline, status = time.monotonic() + 10, None
    while time.monotonic() < deadline:
        res = c.run("refund query is verified", lambda: client.query_refund(out_refund_no=refund_no)) if status is None else client.query_refund(out_refund_no=refund_no)
        code, msg = res or (0, "{}")
        status = json.loads(msg).get("status") if code == 200 else "error"
        if status != "PROCESSING":
            break
        time.sleep(0.2)
    c.check("refund query reaches SUCCESS for 30 fen", status == "SUCCESS" and json.loads(msg).get("amount", {}).get("refund") == 30,
            f"status {code}, body {msg!r}")

    other = "cf" + uuid.uuid4().hex[:24]
    c.run("a second order for closing", lambda: client.pay(description="to close", out_trade_no=other, amount={"total": 50}))
    code, _ = c.run("close is verified (a signed 204)", lambda: client.close(out_trade_no=other)) or (0, "")
    c.check("close answers 204", code == 204, f"status {code}")
    dev = header_names_deviation(names_of_last(), ANSWER_HEADERS)
    c.check("close's 204 carries the signature headers in WeChat's case", not dev, dev)

    receiver.close()
    c.finish()


if __name__ == "__main__":
    main()
