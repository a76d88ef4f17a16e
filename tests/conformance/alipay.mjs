// Alipay OpenAPI (RSA2 public-key mode) against the sandbox mock, through Alipay's official
// Node.js SDK (npm alipay-sdk), unchanged. Usage: node alipay.mjs SANDBOX_JSON
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { randomUUID } from 'node:crypto';
import { AlipaySdk } from 'alipay-sdk';

const sandbox = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const ali = sandbox.channels.alipay;
let passed = 0;
let failed = 0;
function check(name, ok, deviation) {
  if (ok) { passed++; console.log(`PASS alipay: ${name}`); } else { failed++; console.log(`FAIL alipay: ${name}: ${deviation}`); }
  return ok;
}
async function attempt(name, fn) {
  try { const v = await fn(); check(name, true); return v; } catch (e) { check(name, false, `${e.name}: ${e.message}`.slice(0, 400)); return undefined; }
}

// notify_url: a local receiver answering `success`, keeping each notification's fields.
const notes = [];
let wake = () => {};
const receiver = createServer((req, res) => {
  let body = '';
  req.on('data', (c) => { body += c; });
  req.on('end', () => {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end('success');
    notes.push(Object.fromEntries(new URLSearchParams(body)));
    wake();
  });
});
await new Promise((r) => receiver.listen(0, '127.0.0.1', r));
const notifyUrl = `http://127.0.0.1:${receiver.address().port}/notify`;
async function notification(pred) {
  const deadline = Date.now() + 15000;
  for (;;) {
    const found = notes.find(pred);
    if (found || Date.now() > deadline) return found;
    await new Promise((r) => { wake = r; setTimeout(r, 200); });
  }
}

const config = {
  appId: ali.app_id,
  privateKey: readFileSync(ali.app_private_key, 'utf8'),
  keyType: 'PKCS8',
  alipayPublicKey: readFileSync(ali.alipay_public_key, 'utf8'),
  gateway: ali.gateway_do,
};
const sdk = new AlipaySdk(config);
const exec = (method, bizContent, extra = {}) => sdk.exec(method, { bizContent, ...extra }, { validateSign: true });
const control = (path) => fetch(`${ali.mock_url}${path}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' });

const no = `cf${randomUUID().replaceAll('-', '').slice(0, 24)}`;
const pre = await attempt('precreate answered and its signature verified', () =>
  exec('alipay.trade.precreate', { outTradeNo: no, totalAmount: '10.00', subject: 'conformance' }, { notify_url: notifyUrl }));
check('precreate gives code 10000 and a qr_code', pre?.code === '10000' && !!pre?.qrCode, JSON.stringify(pre));

const before = await attempt('query before paying verified', () => exec('alipay.trade.query', { outTradeNo: no }));
check('query before the buyer scans says ACQ.TRADE_NOT_EXIST', before?.subCode === 'ACQ.TRADE_NOT_EXIST', JSON.stringify(before));

await control(`/_sandbox/orders/${no}/pay`);
const paidNote = await notification((n) => n.out_trade_no === no && !n.out_biz_no);
check('payment notification posted to notify_url', !!paidNote, 'nothing within 15 s');
if (paidNote) {
  check('payment notification passes the SDK\'s checkNotifySign', sdk.checkNotifySign(paidNote), 'checkNotifySign returned false');
  check('payment notification says TRADE_SUCCESS for 10.00', paidNote.trade_status === 'TRADE_SUCCESS' && paidNote.total_amount === '10.00', JSON.stringify(paidNote));
}
const after = await attempt('query after paying verified', () => exec('alipay.trade.query', { outTradeNo: no }));
check('query after paying says TRADE_SUCCESS', after?.tradeStatus === 'TRADE_SUCCESS' && after?.totalAmount === '10.00', JSON.stringify(after));

const refund = await attempt('partial refund verified', () => exec('alipay.trade.refund', { outTradeNo: no, refundAmount: '3.00', outRequestNo: 'r1' }));
check('partial refund moves money (fund_change Y, refund_fee 3.00)', refund?.code === '10000' && refund?.fundChange === 'Y' && refund?.refundFee === '3.00', JSON.stringify(refund));
const refundNote = await notification((n) => n.out_trade_no === no && n.out_biz_no === 'r1');
check('partial refund notification posted (TRADE_SUCCESS with out_biz_no)', !!refundNote, 'no notification naming out_biz_no r1 within 15 s');
if (refundNote) {
  check('refund notification passes checkNotifySign', sdk.checkNotifySign(refundNote), 'checkNotifySign returned false');
  check('refund notification carries refund_fee 3.00 and gmt_refund', refundNote.trade_status === 'TRADE_SUCCESS' && refundNote.refund_fee === '3.00' && !!refundNote.gmt_refund, JSON.stringify(refundNote));
}
const rq = await attempt('refund query verified', () => exec('alipay.trade.fastpay.refund.query', { outTradeNo: no, outRequestNo: 'r1' }));
check('refund query says REFUND_SUCCESS for 3.00', rq?.refundStatus === 'REFUND_SUCCESS' && rq?.refundAmount === '3.00', JSON.stringify(rq));
const over = await attempt('over-refund answer verified', () => exec('alipay.trade.refund', { outTradeNo: no, refundAmount: '7.01', outRequestNo: 'r2' }));
check('over-refund refused with ACQ.REFUND_AMT_NOT_EQUAL_TOTAL', over?.code === '40004' && over?.subCode === 'ACQ.REFUND_AMT_NOT_EQUAL_TOTAL', JSON.stringify(over));

const other = `cf${randomUUID().replaceAll('-', '').slice(0, 24)}`;
const pre2 = await exec('alipay.trade.precreate', { outTradeNo: other, totalAmount: '1.00', subject: 'to close' }).catch((e) => e);
await fetch(`${ali.mock_url}/_sandbox/cashier/${other}`); // the buyer scans: the trade exists
const closed = await attempt('close verified', () => exec('alipay.trade.close', { outTradeNo: other }));
check('close gives code 10000', pre2?.code === '10000' && closed?.code === '10000', JSON.stringify(closed));

// page.pay: the SDK's auto-submitting form, posted as a browser would.
const page = `cf${randomUUID().replaceAll('-', '').slice(0, 24)}`;
const form = sdk.pageExec('alipay.trade.page.pay', 'POST', { bizContent: { outTradeNo: page, productCode: 'FAST_INSTANT_TRADE_PAY', totalAmount: '12.34', subject: 'page' }, notify_url: notifyUrl });
const action = /action="([^"]+)"/.exec(form)?.[1]?.replaceAll('&amp;', '&');
const fields = new URLSearchParams();
for (const m of form.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)"/g)) {
  fields.append(m[1], m[2].replaceAll('&quot;', '"').replaceAll('&amp;', '&').replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&#39;', "'"));
}
const cashier = await attempt('page-pay form submitted as a browser would', () => fetch(action, { method: 'POST', body: fields, headers: { 'Content-Type': 'application/x-www-form-urlencoded' } }));
const html = cashier ? await cashier.text() : '';
check('page-pay form opens the cashier for 12.34', cashier?.status === 200 && html.includes('12.34'), `status ${cashier?.status}: ${html.slice(0, 200)}`);

// Response verification is on: the wrong Alipay public key makes every answer fail.
const wrong = new AlipaySdk({ ...config, alipayPublicKey: readFileSync(ali.app_public_key, 'utf8') });
let refused = false;
try { await wrong.exec('alipay.trade.query', { bizContent: { outTradeNo: no } }, { validateSign: true }); } catch (e) { refused = /验签失败/.test(e.message); }
check('with a wrong Alipay public key the SDK refuses the answer (verification is on)', refused, 'an answer passed verification with the wrong key');

receiver.close();
console.log(`alipay: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
