"""UnionPay ACP 5.1.0 against the sandbox mock, through a small client written from the protocol
notes alone (signing, answer parsing and verification of its own, on `cryptography`), not from the
project's Rust code. Usage: unionpay_acp.py SANDBOX_JSON"""

import base64
import hashlib
import sys
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from checks import Checks, Receiver, manifest, post_json, read

BEIJING = timezone(timedelta(hours=8))
UNIONPAY_NAME = "中国银联股份有限公司"


class Acp:
    def __init__(self, up):
        self.up = up
        self.key = serialization.load_pem_private_key(read(up["merchant_private_key"]).encode(), None)
        self.root = x509.load_pem_x509_certificate(read(up["root_certificate"]).encode())
        self.middle = x509.load_pem_x509_certificate(read(up["intermediate_certificate"]).encode())

    @staticmethod
    def digest_hex(fields):
        text = "&".join(f"{k}={fields[k]}" for k in sorted(fields) if k != "signature")
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def sign(self, fields):
        """signMethod 01: blanks dropped; SHA256withRSA over the ASCII of the string's SHA-256 hex."""
        fields = {k: v for k, v in fields.items() if v != ""}
        fields.update(version="5.1.0", encoding="UTF-8", signMethod="01", certId=self.up["cert_id"],
                      merId=self.up["mer_id"], accessType="0")
        sig = self.key.sign(self.digest_hex(fields).encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        fields["signature"] = base64.b64encode(sig).decode()
        return fields

    def verify(self, fields):
        """Every field but `signature`, empty ones included; the key of `signPubKeyCert`, which must
        be valid now, chain to the configured intermediate and root, and belong to UnionPay.
        Returns what is wrong, or ''."""
        pem = fields.get("signPubKeyCert", "")
        if not pem or "signature" not in fields:
            return "no signPubKeyCert or no signature"
        try:
            cert = x509.load_pem_x509_certificate(pem.encode())
        except ValueError as e:
            return f"signPubKeyCert does not parse: {e}"
        now = datetime.now(timezone.utc)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return "signPubKeyCert is outside its validity period"
        try:
            cert.verify_directly_issued_by(self.middle)
            self.middle.verify_directly_issued_by(self.root)
        except Exception as e:
            return f"signPubKeyCert does not chain to the configured intermediate and root: {e}"
        cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        parts = cn[0].value.split("@") if cn else []
        if len(parts) < 3 or parts[2] != UNIONPAY_NAME:
            return f"signPubKeyCert CN {cn[0].value if cn else None!r} is not UnionPay's"
        try:
            cert.public_key().verify(base64.b64decode(fields["signature"]), self.digest_hex(fields).encode("ascii"),
                                     padding.PKCS1v15(), hashes.SHA256())
        except Exception:
            return "signature does not verify with signPubKeyCert"
        return ""

    @staticmethod
    def parse_answer(body):
        """Raw k=v&k=v, never URL-decoded: split on & outside {} and [], key at the first =."""
        fields, depth, start = {}, 0, 0
        for i, ch in enumerate(body + "&"):
            if ch in "{[":
                depth += 1
            elif ch in "}]":
                depth -= 1
            elif ch == "&" and depth == 0:
                pair = body[start:i]
                if pair:
                    k, _, v = pair.partition("=")
                    fields[k] = v
                start = i + 1
        return fields

    def call(self, path, fields):
        data = urllib.parse.urlencode(self.sign(fields)).encode()
        req = urllib.request.Request(self.up["mock_url"] + path, data=data,
                                     headers={"Content-Type": "application/x-www-form-urlencoded;charset=UTF-8"})
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, self.parse_answer(res.read().decode("utf-8"))


def now_beijing():
    return datetime.now(BEIJING).strftime("%Y%m%d%H%M%S")


def main():
    up = manifest(sys.argv[1])["channels"]["unionpay"]
    c = Checks("unionpay")
    acp = Acp(up)
    receiver = Receiver(answer=(200, "text/plain", b"ok"))
    back_url = receiver.url + "/back"

    def answer_checks(what, status, fields, want):
        bad = acp.verify(fields)
        c.check(f"{what}: answer verified through signPubKeyCert's chain", status == 200 and not bad,
                f"HTTP {status}: {bad}")
        wrong = {k: v for k, v in want.items() if fields.get(k) != v}
        c.check(f"{what}: answer says {want}", not wrong,
                f"got {({k: fields.get(k) for k in wrong})}, respMsg {fields.get('respMsg')!r}")

    order, txn_time = uuid.uuid4().hex[:24], now_beijing()
    status, qr = acp.call("/gateway/api/backTransReq.do", {
        "txnType": "01", "txnSubType": "07", "bizType": "000000", "channelType": "08", "orderId": order,
        "txnTime": txn_time, "txnAmt": "100", "currencyCode": "156", "backUrl": back_url})
    answer_checks("QR consume", status, qr, {"respCode": "00"})
    c.check("QR consume: answer carries a qrCode", bool(qr.get("qrCode")), f"fields {sorted(qr)}")

    post_json(f"{up['mock_url']}/_sandbox/orders/{order}/pay")
    note = receiver.wait(lambda r: r["path"] == "/back" and order.encode() in r["body"])
    c.check("back notification posted to backUrl", note is not None, "nothing within 15 s")
    if note:
        fields = dict(urllib.parse.parse_qsl(note["body"].decode("utf-8"), keep_blank_values=True))
        bad = acp.verify(fields)
        c.check("back notification verified through signPubKeyCert's chain", not bad, bad)
        c.check("back notification says respCode 00 for 100 fen",
                fields.get("respCode") == "00" and fields.get("txnAmt") == "100" and fields.get("orderId") == order,
                f"respCode {fields.get('respCode')}, txnAmt {fields.get('txnAmt')}, orderId {fields.get('orderId')}")

    status, q = acp.call("/gateway/api/queryTrans.do", {
        "txnType": "00", "txnSubType": "00", "bizType": "000000", "orderId": order, "txnTime": txn_time})
    answer_checks("query", status, q, {"respCode": "00", "origRespCode": "00", "txnAmt": "100"})

    refund_order = uuid.uuid4().hex[:24]
    status, r = acp.call("/gateway/api/backTransReq.do", {
        "txnType": "04", "txnSubType": "00", "bizType": "000000", "channelType": "08", "orderId": refund_order,
        "origQryId": q.get("queryId", ""), "txnTime": now_beijing(), "txnAmt": "30", "currencyCode": "156",
        "backUrl": back_url})
    answer_checks("refund of 30 fen", status, r, {"respCode": "00"})
    note = receiver.wait(lambda r: r["path"] == "/back" and refund_order.encode() in r["body"])
    if c.check("refund notification posted to backUrl", note is not None, "nothing within 15 s"):
        fields = dict(urllib.parse.parse_qsl(note["body"].decode("utf-8"), keep_blank_values=True))
        bad = acp.verify(fields)
        c.check("refund notification verified through signPubKeyCert's chain", not bad, bad)

    receiver.close()
    c.finish()


if __name__ == "__main__":
    main()
