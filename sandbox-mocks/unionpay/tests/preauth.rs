//! The preauthorisation family (02 preauth, 03 completion, 32 preauth undo, 33 completion undo)
//! over real loopback sockets, driven by a small ACP merchant written here from the protocol
//! notes: it signs its requests (signMethod 01), parses raw `k=v&` answers without URL-decoding
//! them, and verifies every answer and notification by the chain.

#![allow(clippy::unwrap_used)]

mod support;

use support::*;

impl Sandbox {
    /// A preauth (02/01) through the app, paid at the bank page and notified:
    /// (orderId, txnTime, queryId).
    async fn held(&self, amount: &str) -> (String, String, String) {
        let (id, time) = (order_id("PA"), now_compact());
        let mut fields = self.consume_fields(&id, &time, amount, "01");
        fields.insert("txnType".into(), "02".into());
        let answer = self.call("appTransReq.do", fields).await;
        assert_eq!(answer["respCode"], "00", "{answer:?}");
        assert!(!answer["tn"].is_empty());
        assert_eq!(self.control(&id, "pay").await.status(), 200);
        let note = &self.notification_for(&id, 1).await[0];
        assert!(self.verified(note));
        assert_eq!((note["txnType"].as_str(), note["txnAmt"].as_str()), ("02", amount));
        let query = self.query(&id, &time).await;
        assert_eq!((query["origRespCode"].as_str(), query["txnType"].as_str()), ("00", "02"));
        (id, time, query["queryId"].clone())
    }

    /// A back transaction of `txn_type` naming `orig`: its orderId, txnTime and the answer.
    async fn step(&self, txn_type: &str, orig: &str, amount: &str) -> (String, String, Fields) {
        let (id, time, fields) = self.take_back_fields(txn_type, orig, amount);
        let answer = self.call("backTransReq.do", fields).await;
        (id, time, answer)
    }

    async fn preauths(&self) -> Value {
        let url = format!("{}/_sandbox/preauth", self.base);
        self.http.get(url).send().await.unwrap().json().await.unwrap()
    }

    async fn settings(&self, settings: serde_json::Value) {
        let url = format!("{}/_sandbox/preauth/settings", self.base);
        let res = self.http.post(url).json(&settings).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }
}

#[tokio::test]
async fn a_preauth_holds_and_its_completion_captures_up_to_115_percent() {
    let s = start().await;
    let (pre_id, _, pre_qid) = s.held("1000").await;
    let state = s.preauths().await;
    assert_eq!(state["merchants"][MER_ID]["held"], 1000);
    assert_eq!(state["preauths"][0]["state"], "held");
    // A preauth is not a consume: no refund or consume cancel.
    assert_eq!(s.step("04", &pre_qid, "100").await.2["respCode"], "35");
    assert_eq!(s.step("31", &pre_qid, "1000").await.2["respCode"], "35");

    assert_eq!(s.step("03", &pre_qid, "1151").await.2["respCode"], "36", "over 115 %");
    let (done_id, done_time, answer) = s.step("03", &pre_qid, "1150").await;
    assert_eq!(answer["respCode"], "00");
    assert_eq!(answer["origQryId"], pre_qid);
    let completion_qid = answer["queryId"].clone();
    let note = &s.notification_for(&done_id, 1).await[0];
    assert!(s.verified(note));
    assert_eq!((note["txnType"].as_str(), note["txnAmt"].as_str()), ("03", "1150"));
    assert_eq!(note["origQryId"], pre_qid);
    assert_eq!(note["queryId"], completion_qid);
    let query = s.query(&done_id, &done_time).await;
    assert_eq!((query["respCode"].as_str(), query["origRespCode"].as_str()), ("00", "00"));

    assert_eq!(s.step("03", &pre_qid, "10").await.2["respCode"], "35", "completed once");
    assert_eq!(s.step("32", &pre_qid, "1000").await.2["respCode"], "35", "completed: no undo");
    let state = s.preauths().await;
    assert_eq!(state["preauths"][0]["state"], "completed");
    assert_eq!(state["merchants"][MER_ID]["captured"], 1150);
    assert_eq!(state["merchants"][MER_ID]["held"], 0);
    let url = format!("{}/_sandbox/receivers/{MER_ID}", s.base);
    let receiver: Value = s.http.get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (receiver["held"].as_i64(), receiver["balance_fen"].as_i64()),
        (Some(0), Some(1150))
    );

    // A completion is refunded like a consume (04).
    let (refund_id, _, answer) = s.step("04", &completion_qid, "150").await;
    assert_eq!(answer["respCode"], "00");
    assert_eq!(s.notification_for(&refund_id, 1).await[0]["txnType"], "04");
    assert_eq!(s.preauths().await["merchants"][MER_ID]["captured"], 1000);
    let order = s.order(&pre_id).await;
    assert_eq!(order["refunds"].as_array().unwrap().len(), 1, "the completion, under its preauth");
}

#[tokio::test]
async fn an_undo_releases_the_whole_hold_and_a_completion_undo_reopens_the_preauth() {
    let s = start().await;
    let (_, _, first) = s.held("500").await;
    assert_eq!(s.step("32", &first, "400").await.2["respCode"], "36", "the full amount only");
    let (undo_id, _, answer) = s.step("32", &first, "500").await;
    assert_eq!(answer["respCode"], "00");
    let note = &s.notification_for(&undo_id, 1).await[0];
    assert!(s.verified(note));
    assert_eq!((note["txnType"].as_str(), note["origQryId"].as_str()), ("32", first.as_str()));
    assert_eq!(
        s.step("03", &first, "500").await.2["respCode"],
        "35",
        "undone: nothing to complete"
    );
    assert_eq!(s.step("32", &first, "500").await.2["respCode"], "35");

    let (_, _, second) = s.held("800").await;
    let (_, _, answer) = s.step("03", &second, "800").await;
    let completion = answer["queryId"].clone();
    assert_eq!(s.step("33", &completion, "700").await.2["respCode"], "36", "the full amount only");
    let (cu_id, _, answer) = s.step("33", &completion, "800").await;
    assert_eq!(answer["respCode"], "00");
    assert_eq!(s.notification_for(&cu_id, 1).await[0]["txnType"], "33");
    assert_eq!(s.step("04", &completion, "1").await.2["respCode"], "35", "an undone completion");

    let state = s.preauths().await;
    let states: Vec<&str> = state["preauths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["state"].as_str().unwrap())
        .collect();
    assert!(states.contains(&"undone") && states.contains(&"held"), "{states:?}");
    assert_eq!(state["merchants"][MER_ID]["held"], 800);
    // The reopened preauth completes again.
    assert_eq!(s.step("03", &second, "600").await.2["respCode"], "00");
    assert_eq!(s.preauths().await["merchants"][MER_ID]["captured"], 600);
}

#[tokio::test]
async fn a_completion_in_process_queries_05_until_it_succeeds_and_expired_preauths_refuse() {
    let s = start().await;
    s.settings(serde_json::json!({"completion_delay_ms": 300})).await;
    let (_, _, pre) = s.held("300").await;
    let (id, time, answer) = s.step("03", &pre, "300").await;
    assert_eq!(answer["respCode"], "00", "accepted");
    let query = s.query(&id, &time).await;
    assert_eq!((query["respCode"].as_str(), query["origRespCode"].as_str()), ("00", "05"));
    assert_eq!(s.preauths().await["preauths"][0]["state"], "completing");
    let note = &s.notification_for(&id, 1).await[0];
    assert_eq!((note["txnType"].as_str(), note["respCode"].as_str()), ("03", "00"));
    let query = s.query(&id, &time).await;
    assert_eq!(query["origRespCode"], "00");

    // The in-process fault: the step is done, the answer says 05.
    s.mock.set_faults(Faults {
        in_process_after_commit: vec!["preauth".into()],
        ..Faults::default()
    });
    let (_, _, other) = s.held("200").await;
    let (undo_id, undo_time, answer) = s.step("32", &other, "200").await;
    assert_eq!(answer["respCode"], "05");
    assert_eq!(s.query(&undo_id, &undo_time).await["origRespCode"], "00");
    s.mock.set_faults(Faults::default());

    // Past the validity period a preauth can be neither completed nor undone.
    s.settings(serde_json::json!({"valid_seconds": 0})).await;
    let (_, _, late) = s.held("100").await;
    let (_, _, answer) = s.step("03", &late, "100").await;
    assert_eq!((answer["respCode"].as_str(), answer["respMsg"].as_str()), ("35", "原预授权已过期"));
    assert_eq!(s.step("32", &late, "100").await.2["respCode"], "35");
}

#[tokio::test]
async fn a_completion_whose_answer_never_comes_is_done_and_found_by_the_query() {
    let s = start().await;
    let (_, _, pre) = s.held("700").await;
    s.mock.set_faults(Faults { timeout_after_commit: vec!["preauth".into()], ..Faults::default() });
    let (id, time, fields) = s.take_back_fields("03", &pre, "700");
    let signed = sign(fields, &s.merchant_key, &s.cert_id);
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&signed).finish();
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let sent = impatient
        .post(format!("{}/gateway/api/backTransReq.do", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await;
    assert!(sent.is_err_and(|e| e.is_timeout()), "no answer");
    s.mock.set_faults(Faults::default());
    // The completion was made: the query and the back notification say so.
    let query = s.query(&id, &time).await;
    assert_eq!((query["respCode"].as_str(), query["origRespCode"].as_str()), ("00", "00"));
    assert_eq!(s.notification_for(&id, 1).await[0]["txnType"], "03");
}
