//! The mock over real loopback sockets, driven by a small ACP merchant written here from the
//! protocol notes: it signs its requests (signMethod 01), parses raw `k=v&` answers without
//! URL-decoding them, and verifies every answer and notification by the chain (signature over
//! every field, `signPubKeyCert` issued by the intermediate, itself by the root, valid now,
//! owned by UnionPay).

#![allow(clippy::unwrap_used)]

mod support;

use support::*;

#[tokio::test]
async fn app_consume_answers_a_tn_and_notifies_the_payment_with_an_encrypted_card() {
    let s = start().await;
    let (id, time) = (order_id("APP"), now_compact());
    let answer = s.call("appTransReq.do", s.consume_fields(&id, &time, "100", "01")).await;
    assert_eq!(answer["respCode"], "00");
    assert!(!answer["tn"].is_empty());
    assert_eq!(answer["reqReserved"], "{a=1&b=2}", "echoed raw, braces and all");
    assert!(answer["signPubKeyCert"].contains("\r\n") && !answer["signPubKeyCert"].ends_with('\n'));

    let before = s.query(&id, &time).await;
    assert_eq!(before["respCode"], "34", "an unpaid tn is unknown to UnionPay");

    assert_eq!(s.control(&id, "pay").await.status(), 200);
    let notes = s.notification_for(&id, 1).await;
    let note = &notes[0];
    assert!(s.verified(note), "the back notification verifies by the chain");
    assert_eq!(note["respCode"], "00");
    assert_eq!(note["txnAmt"], "100");
    assert_eq!(s.decrypt(&note["accNo"]), "6216***********0018");

    let after = s.query(&id, &time).await;
    assert_eq!((after["respCode"].as_str(), after["origRespCode"].as_str()), ("00", "00"));
    assert_eq!(after["queryId"], note["queryId"]);
}

#[tokio::test]
async fn front_consume_shows_the_bank_page_and_posts_the_signed_front_notification() {
    let s = start().await;
    let (id, time) = (order_id("WEB"), now_compact());
    let mut fields = s.consume_fields(&id, &time, "1234", "01");
    fields.insert("frontUrl".into(), "http://127.0.0.1:1/return".into());
    let signed = sign(fields, &s.merchant_key, &s.cert_id);
    let response = s.post("frontTransReq.do", &signed).await;
    assert_eq!(response.status(), 303);
    let bank = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(bank.starts_with(&format!("{}/_sandbox/cashier/{id}", s.base)));

    let html = s.http.get(&bank).send().await.unwrap().text().await.unwrap();
    assert!(html.contains(SHOP) && html.contains("12.34") && html.contains("name=\"accNo\""));
    assert!(html.contains(">Pay<") && html.contains(">Cancel<"));

    let pay = s
        .http
        .post(format!("{}/_sandbox/cashier/{id}/pay", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("merId={MER_ID}&txnTime={time}&accNo=6216261000000000018"))
        .send()
        .await
        .unwrap();
    let page = pay.text().await.unwrap();
    assert!(page.contains("action=\"http://127.0.0.1:1/return\"") && page.contains(".submit()"));
    let front: Fields = page
        .split("<input type=\"hidden\" ")
        .skip(1)
        .map(|input| {
            let name = input.split("name=\"").nth(1).unwrap().split('"').next().unwrap();
            let value = input.split("value=\"").nth(1).unwrap().split('"').next().unwrap();
            (
                name.to_owned(),
                value
                    .replace("&#39;", "'")
                    .replace("&quot;", "\"")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&"),
            )
        })
        .collect();
    assert!(s.verified(&front), "the front notification verifies: {front:?}");
    assert_eq!(front["orderId"], id);
    assert_eq!(front["respCode"], "00");
    assert!(s.verified(&s.notification_for(&id, 1).await[0]));
}

#[tokio::test]
async fn qr_consume_answers_a_qr_code_payable_through_the_cashier() {
    let s = start().await;
    let (id, time) = (order_id("QR"), now_compact());
    let answer = s.call("backTransReq.do", s.consume_fields(&id, &time, "500", "07")).await;
    assert_eq!(answer["respCode"], "00");
    let qr = answer["qrCode"].clone();
    assert!(qr.starts_with(&format!("{}/_sandbox/qr/", s.base)) && !qr.contains('&'));
    assert_eq!(s.query(&id, &time).await["respCode"], "34", "not scanned yet");

    let scan = s.http.get(&qr).send().await.unwrap();
    assert_eq!(scan.status(), 303);
    let bank = scan.headers()["location"].to_str().unwrap().to_owned();
    let html = s.http.get(&bank).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("<svg") && html.contains("5.00"));
    let scanned = s.query(&id, &time).await;
    assert_eq!((scanned["respCode"].as_str(), scanned["origRespCode"].as_str()), ("00", "05"));

    let pay = s
        .http
        .post(format!("{}/_sandbox/cashier/{id}/pay", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("merId={MER_ID}&txnTime={time}&accNo=6222000000000000"))
        .send()
        .await
        .unwrap();
    assert_eq!(pay.status(), 303, "no frontUrl: back to the cashier");
    let note = &s.notification_for(&id, 1).await[0];
    assert!(s.verified(note));
    assert_eq!(s.decrypt(&note["accNo"]), "6222********0000");
}

#[tokio::test]
async fn bad_signature_unknown_cert_id_and_unregistered_mer_id_are_refused_in_unionpays_shape() {
    let s = start().await;
    let time = now_compact();

    let mut tampered =
        sign(s.consume_fields(&order_id("B"), &time, "100", "01"), &s.merchant_key, &s.cert_id);
    tampered.insert("txnAmt".into(), "1".into());
    let answer = parse_raw(&s.post("appTransReq.do", &tampered).await.text().await.unwrap());
    assert_eq!(answer["respCode"], "11");
    assert!(s.verified(&answer), "a refusal is signed too");

    let unknown_cert =
        sign(s.consume_fields(&order_id("B"), &time, "100", "01"), &s.merchant_key, "12345678901");
    let answer = parse_raw(&s.post("appTransReq.do", &unknown_cert).await.text().await.unwrap());
    assert_eq!(answer["respCode"], "11");

    let mut stranger = s.consume_fields(&order_id("B"), &time, "100", "01");
    stranger.insert("merId".into(), "777290058100000".into());
    let stranger = sign(stranger, &s.merchant_key, &s.cert_id);
    let response = s.post("appTransReq.do", &stranger).await;
    assert_eq!(response.status(), 200, "refusals are HTTP 200 too");
    assert_eq!(parse_raw(&response.text().await.unwrap())["respCode"], "31");

    let listed: Value = s
        .http
        .get(format!("{}/_sandbox/orders", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["orders"].as_array().unwrap().len(), 0, "nothing was created");
}

#[tokio::test]
async fn a_repeated_order_id_and_txn_time_is_refused_as_a_duplicate() {
    let s = start().await;
    let (id, time) = (order_id("D"), now_compact());
    assert_eq!(
        s.call("appTransReq.do", s.consume_fields(&id, &time, "100", "01")).await["respCode"],
        "00"
    );
    assert_eq!(
        s.call("appTransReq.do", s.consume_fields(&id, &time, "100", "01")).await["respCode"],
        "12"
    );
}

#[tokio::test]
async fn refunds_can_be_partial_and_repeated_and_an_over_refund_is_refused() {
    let s = start().await;
    let (_, _, query_id) = s.paid_consume("1000").await;

    let (first, first_time, fields) = s.take_back_fields("04", &query_id, "300");
    assert_eq!(s.call("backTransReq.do", fields).await["respCode"], "00");
    let (_, _, fields) = s.take_back_fields("04", &query_id, "700");
    assert_eq!(s.call("backTransReq.do", fields).await["respCode"], "00");
    let (_, _, fields) = s.take_back_fields("04", &query_id, "1");
    assert_eq!(s.call("backTransReq.do", fields).await["respCode"], "36", "nothing left to refund");

    let refund = s.query(&first, &first_time).await;
    assert_eq!((refund["respCode"].as_str(), refund["origRespCode"].as_str()), ("00", "00"));
    assert_eq!(refund["txnType"], "04");
    let note = &s.notification_for(&first, 1).await[0];
    assert!(s.verified(note));
    assert_eq!((note["txnType"].as_str(), note["txnAmt"].as_str()), ("04", "300"));
    assert_eq!(note["origQryId"], query_id);
}

#[tokio::test]
async fn a_same_day_cancel_takes_back_the_whole_amount_and_a_partial_one_is_refused() {
    let s = start().await;
    let (_, _, query_id) = s.paid_consume("800").await;
    let (_, _, partial) = s.take_back_fields("31", &query_id, "100");
    assert_eq!(s.call("backTransReq.do", partial).await["respCode"], "36");
    let (cancel, _, full) = s.take_back_fields("31", &query_id, "800");
    assert_eq!(s.call("backTransReq.do", full).await["respCode"], "00");
    let note = &s.notification_for(&cancel, 1).await[0];
    assert_eq!(note["txnType"], "31");
    let (_, _, refund) = s.take_back_fields("04", &query_id, "1");
    assert_eq!(
        s.call("backTransReq.do", refund).await["respCode"],
        "35",
        "a cancelled consume is over"
    );
}

#[tokio::test]
async fn a_back_notification_is_resent_until_answered_200() {
    let s = start().await;
    *s.receiver.refuse.lock().unwrap() = 2;
    let (id, _, _) = s.paid_consume("100").await;
    let sends = s.notification_for(&id, 3).await;
    assert!(sends.iter().all(|n| s.verified(n)));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let order = s.order(&id).await;
        let deliveries = order["deliveries"].as_array().unwrap().clone();
        if deliveries.iter().any(|d| d["outcome"] == "acknowledged") {
            let outcomes: Vec<&str> =
                deliveries.iter().map(|d| d["outcome"].as_str().unwrap()).collect();
            assert_eq!(outcomes, vec!["refused", "refused", "acknowledged"]);
            break;
        }
        assert!(Instant::now() < deadline, "never acknowledged: {deliveries:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn queries_answer_05_while_the_fault_is_on_then_the_real_state() {
    let s = start().await;
    let (id, time, _) = s.paid_consume("100").await;
    s.mock.set_faults(Faults { in_process_queries: 2, ..Faults::default() });
    assert_eq!(s.query(&id, &time).await["respCode"], "05");
    assert_eq!(s.query(&id, &time).await["respCode"], "05");
    let real = s.query(&id, &time).await;
    assert_eq!((real["respCode"].as_str(), real["origRespCode"].as_str()), ("00", "00"));
}

#[tokio::test]
async fn faults_set_over_http_change_answers_and_clear() {
    let s = start().await;
    let set = s
        .http
        .post(format!("{}/_sandbox/faults", s.base))
        .json(&serde_json::json!({"bad_signature": true, "in_process_after_commit": ["refund"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let (id, time) = (order_id("F"), now_compact());
    let signed = sign(s.consume_fields(&id, &time, "100", "01"), &s.merchant_key, &s.cert_id);
    let answer = parse_raw(&s.post("appTransReq.do", &signed).await.text().await.unwrap());
    assert_eq!(answer["respCode"], "00");
    assert!(!s.verified(&answer), "the bad-signature fault breaks the signature");

    let cleared = s.http.delete(format!("{}/_sandbox/faults", s.base)).send().await.unwrap();
    assert_eq!(cleared.status(), 200);
    let unknown = s
        .http
        .post(format!("{}/_sandbox/faults", s.base))
        .json(&serde_json::json!({"timeout_after_commit": ["nope"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    assert!(s.verified(&s.query(&id, &time).await));
}

#[tokio::test]
async fn a_refund_under_the_in_process_fault_answers_05_and_is_done() {
    let s = start().await;
    let (_, _, query_id) = s.paid_consume("100").await;
    s.mock
        .set_faults(Faults { in_process_after_commit: vec!["refund".into()], ..Faults::default() });
    let (refund, time, fields) = s.take_back_fields("04", &query_id, "100");
    assert_eq!(s.call("backTransReq.do", fields).await["respCode"], "05");
    s.mock.set_faults(Faults::default());
    assert_eq!(s.query(&refund, &time).await["origRespCode"], "00");
}

#[tokio::test]
async fn a_failed_payment_queries_as_failed_and_a_lapsed_one_as_unknown() {
    let s = start().await;
    let (failed, failed_time) = (order_id("X"), now_compact());
    s.call("appTransReq.do", s.consume_fields(&failed, &failed_time, "100", "01")).await;
    assert_eq!(s.control(&failed, "fail").await.status(), 200);
    let answer = s.query(&failed, &failed_time).await;
    assert_eq!((answer["respCode"].as_str(), answer["origRespCode"].as_str()), ("00", "01"));

    let (lapsed, lapsed_time) = (order_id("L"), now_compact());
    s.call("appTransReq.do", s.consume_fields(&lapsed, &lapsed_time, "100", "01")).await;
    assert_eq!(s.control(&lapsed, "close").await.status(), 200);
    assert_eq!(s.query(&lapsed, &lapsed_time).await["respCode"], "34");
    assert_eq!(s.control(&lapsed, "pay").await.status(), 409, "a lapsed order cannot be paid");
}

#[tokio::test]
async fn a_front_form_with_a_bad_signature_shows_unionpays_error_page() {
    let s = start().await;
    let mut signed = sign(
        s.consume_fields(&order_id("E"), &now_compact(), "100", "01"),
        &s.merchant_key,
        &s.cert_id,
    );
    signed.insert("txnAmt".into(), "99".into());
    let response = s.post("frontTransReq.do", &signed).await;
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains("<code>11</code>") && html.contains("验证签名失败"));
}

#[tokio::test]
async fn dropped_notifications_are_logged_as_dropped_and_duplicated_ones_arrive_twice() {
    let s = start().await;
    s.mock.set_faults(Faults { drop_notifications: true, ..Faults::default() });
    let (dropped, _, _) = s.paid_consume("100").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let deliveries = s.order(&dropped).await["deliveries"].as_array().unwrap().clone();
        if deliveries.len() == 5 {
            assert!(deliveries.iter().all(|d| d["outcome"] == "dropped"));
            break;
        }
        assert!(Instant::now() < deadline, "five sends expected: {deliveries:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    s.mock.set_faults(Faults { duplicate_notifications: true, ..Faults::default() });
    let (twice, _, _) = s.paid_consume("100").await;
    let copies = s.notification_for(&twice, 2).await;
    assert_eq!(copies[0], copies[1]);
}

#[tokio::test]
async fn timeout_after_commit_keeps_the_answer_but_does_the_work() {
    let s = start().await;
    s.mock.set_faults(Faults { timeout_after_commit: vec!["app".into()], ..Faults::default() });
    let (id, time) = (order_id("T"), now_compact());
    let signed = sign(s.consume_fields(&id, &time, "100", "01"), &s.merchant_key, &s.cert_id);
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&signed).finish();
    let sent = s
        .http
        .post(format!("{}/gateway/api/appTransReq.do", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .timeout(Duration::from_millis(500))
        .body(body)
        .send()
        .await;
    assert!(sent.is_err_and(|e| e.is_timeout()));
    s.mock.set_faults(Faults::default());
    assert_eq!(s.control(&id, "pay").await.status(), 200, "the order exists");
    assert_eq!(s.query(&id, &time).await["origRespCode"], "00");
}

#[tokio::test]
async fn with_the_reorder_fault_a_later_notification_arrives_first() {
    let s = start().await;
    let (first, second) = (order_id("O"), order_id("O"));
    for id in [&first, &second] {
        let fields = s.consume_fields(id, &now_compact(), "100", "01");
        assert_eq!(s.call("appTransReq.do", fields).await["respCode"], "00");
    }
    s.mock.set_faults(Faults { reorder_notifications: true, ..Faults::default() });
    // Paid back to back: the first is held until the second has been sent (the hold lasts 1 s).
    assert_eq!(s.control(&first, "pay").await.status(), 200);
    assert_eq!(s.control(&second, "pay").await.status(), 200);
    s.notification_for(&first, 1).await;
    s.notification_for(&second, 1).await;
    let arrivals: Vec<String> =
        s.receiver.received.lock().unwrap().iter().map(|f| f["orderId"].clone()).collect();
    assert_eq!(arrivals, vec![second, first]);
}

/// Sends `request` as raw bytes and reads the answer as written: its status line and header
/// names, in the case they went over the wire.
async fn raw_head(addr: &str, request: &str) -> (String, Vec<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, _) = answer.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_owned();
    (status, lines.map(|l| l.split_once(':').unwrap().0.to_owned()).collect())
}

#[tokio::test]
async fn gateway_answers_carry_header_names_in_title_case_on_the_wire() {
    let sb = start().await;
    let addr = sb.base.trim_start_matches("http://").to_owned();
    let body = "version=5.1.0&txnType=00";
    let request = format!(
        "POST /gateway/api/queryTrans.do HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/x-www-form-urlencoded;charset=UTF-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, names) = raw_head(&addr, &request).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(names.iter().any(|n| n == "Content-Type"), "{names:?}");
    assert!(names.iter().any(|n| n == "Content-Length"), "{names:?}");
    assert!(names.iter().all(|n| !n.starts_with(|c: char| c.is_ascii_lowercase())), "{names:?}");
}
