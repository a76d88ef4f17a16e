//! Real answers of the API, collected for the check that they match the OpenAPI document.
//!
//! This test drives the sandbox through every `/v1` operation, a few errors among them, and
//! writes the document the gateway serves with every answer (method, route template, status,
//! body) to `<target>/tmp/openapi-answers/`. `scripts/check-openapi.py`, run by `.ci/run` with
//! validators nobody here wrote, then validates the document and each answer against the schema
//! the document gives for that operation and status.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use paymux_e2e::TestApp;
use reqwest::Method;
use serde_json::{Value, json};

/// Where the answers go: under the target directory, so nothing lands in the source tree.
fn out_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("openapi-answers")
}

#[derive(Default)]
struct Answers(Vec<Value>);

impl Answers {
    /// Calls `method path` (the route template with `ids` filled in, in order) and keeps the answer.
    async fn call(
        &mut self,
        app: &TestApp,
        method: Method,
        template: &str,
        ids: &[&str],
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut path = template.to_owned();
        for id in ids {
            let at = path.find('{').unwrap();
            let end = at + path[at..].find('}').unwrap();
            path.replace_range(at..=end, id);
        }
        let (status, answer) = app.call(method.clone(), &path, body).await;
        self.0.push(json!({
            "method": method.as_str().to_lowercase(),
            "path": template.split('?').next().unwrap(),
            "status": status,
            "body": answer,
        }));
        (status, answer)
    }
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_operation_answers_for_the_schema_check() {
    let app = TestApp::spawn().await;
    let mut a = Answers::default();
    let (get, post, delete) = (Method::GET, Method::POST, Method::DELETE);

    let hook = json!({"url": "http://127.0.0.1:9/hook", "events": ["payment.succeeded"]});
    let (s, ep) = a.call(&app, post.clone(), "/v1/webhook_endpoints", &[], Some(hook)).await;
    assert_eq!(s, 201, "{ep}");

    let create = |order: &str, channel: &str, method: &str| {
        json!({"merchant_order_no": order, "amount": 1000, "currency": "CNY", "subject": "s",
               "channel": channel, "method": method, "metadata": {"cart": "42"}})
    };
    let (s, p) =
        a.call(&app, post.clone(), "/v1/payments", &[], Some(create("oa-1", "alipay", "qr"))).await;
    assert_eq!(s, 201, "{p}");
    let (s, e) =
        a.call(&app, post.clone(), "/v1/payments", &[], Some(create("oa-1", "alipay", "qr"))).await;
    assert_eq!(s, 409, "a used order number: {e}");
    let (s, e) = a.call(&app, post.clone(), "/v1/payments", &[], Some(json!({"amount": 1}))).await;
    assert_eq!(s, 400, "{e}");
    let (s, _) = a
        .call(&app, post.clone(), "/v1/payments", &[], Some(create("oa-2", "unionpay", "page")))
        .await;
    assert_eq!(s, 400, "a page payment without its return URL fails before the channel");
    let (s, _) =
        a.call(&app, post.clone(), "/v1/payments", &[], Some(create("oa-3", "wechat", "qr"))).await;
    assert_eq!(s, 201);

    let pid = id(&p);
    app.pay_at_mock("alipay", p["channel_order_no"].as_str().unwrap()).await;
    app.wait_payment(&pid, "succeeded").await;
    a.call(&app, get.clone(), "/v1/payments/{id}", &[&pid], None).await;
    a.call(&app, get.clone(), "/v1/payments/{id}", &["pay_nothing"], None).await;
    a.call(&app, get.clone(), "/v1/payments?limit=10", &[], None).await;
    a.call(&app, post.clone(), "/v1/payments/{id}/sync", &[&pid], Some(json!({}))).await;
    let (s, _) =
        a.call(&app, post.clone(), "/v1/payments/{id}/close", &[&pid], Some(json!({}))).await;
    assert_eq!(s, 409, "a succeeded payment does not close");

    let refund = json!({"amount": 300, "merchant_refund_no": "ra-1", "reason": "size"});
    let (s, r) =
        a.call(&app, post.clone(), "/v1/payments/{id}/refunds", &[&pid], Some(refund)).await;
    assert_eq!(s, 201, "{r}");
    let too_much = json!({"amount": 5000, "merchant_refund_no": "ra-2"});
    a.call(&app, post.clone(), "/v1/payments/{id}/refunds", &[&pid], Some(too_much)).await;
    a.call(&app, get.clone(), "/v1/payments/{id}/refunds", &[&pid], None).await;
    a.call(&app, get.clone(), "/v1/refunds/{id}", &[&id(&r)], None).await;
    a.call(&app, get.clone(), "/v1/refunds?merchant_refund_no=ra-1", &[], None).await;

    let (_, events) = a.call(&app, get.clone(), "/v1/events", &[], None).await;
    let event = id(&events["data"][0]);
    a.call(&app, get.clone(), "/v1/events/{id}", &[&event], None).await;
    a.call(&app, post.clone(), "/v1/events/{id}/redeliver", &[&event], Some(json!({}))).await;

    let (_, pending) = app.create_payment("alipay", "qr", "oa-4", 200).await;
    let switch = json!({"channel": "wechat", "method": "qr"});
    let (s, switched) = a
        .call(&app, post.clone(), "/v1/payments/{id}/attempts", &[&id(&pending)], Some(switch))
        .await;
    assert_eq!(s, 201, "{switched}");
    let (s, _) = a
        .call(
            &app,
            post.clone(),
            "/v1/payments/{id}/attempts",
            &[&pid],
            Some(json!({"channel": "wechat", "method": "qr"})),
        )
        .await;
    assert_eq!(s, 409, "a succeeded payment takes no attempt");
    let (s, _) = a
        .call(&app, post.clone(), "/v1/payments/{id}/close", &[&id(&pending)], Some(json!({})))
        .await;
    assert_eq!(s, 200);

    a.call(&app, get.clone(), "/v1/webhook_endpoints", &[], None).await;
    a.call(
        &app,
        post.clone(),
        "/v1/webhook_endpoints/{id}/rotate_secret",
        &[&id(&ep)],
        Some(json!({})),
    )
    .await;
    a.call(&app, delete.clone(), "/v1/webhook_endpoints/{id}", &[&id(&ep)], None).await;

    let rcv = json!({"name": "platform", "accounts": {"unionpay": {"account": "p-1"}}});
    let (s, r) = a.call(&app, post.clone(), "/v1/receivers", &[], Some(rcv)).await;
    assert_eq!(s, 201, "{r}");
    a.call(&app, post.clone(), "/v1/receivers", &[], Some(json!({"name": "x"}))).await;
    a.call(&app, get.clone(), "/v1/receivers", &[], None).await;
    a.call(&app, get.clone(), "/v1/receivers/{id}", &[&id(&r)], None).await;
    let mut held = create("oa-5", "unionpay", "qr");
    held["settlement"] = json!({"hold": true, "splits": [{"receiver": id(&r), "ratio_bps": 1000}]});
    let (s, h) = a.call(&app, post.clone(), "/v1/payments", &[], Some(held)).await;
    assert_eq!(s, 201, "{h}");
    let (s, _) =
        a.call(&app, post.clone(), "/v1/payments/{id}/settle", &[&id(&h)], Some(json!({}))).await;
    assert_eq!(s, 400, "not paid yet");
    app.pay_at_mock("unionpay", h["channel_order_no"].as_str().unwrap()).await;
    app.wait_payment(&id(&h), "succeeded").await;
    let (s, _) =
        a.call(&app, post.clone(), "/v1/payments/{id}/settle", &[&id(&h)], Some(json!({}))).await;
    assert_eq!(s, 200);
    a.call(&app, get.clone(), "/v1/ledger?payment_id={id}", &[&id(&h)], None).await;
    a.call(&app, get.clone(), "/v1/balances", &[], None).await;
    a.call(&app, delete, "/v1/receivers/{id}", &[&id(&r)], None).await;
    let unauthenticated = app.call_as("sk_test_wrong", get, "/v1/payments", None).await;
    assert_eq!(unauthenticated.0, 401);
    a.0.push(
        json!({"method": "get", "path": "/v1/payments", "status": 401, "body": unauthenticated.1}),
    );

    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.gateway))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dir = out_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("openapi.json"), serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    std::fs::write(dir.join("answers.json"), serde_json::to_vec_pretty(&a.0).unwrap()).unwrap();
    // Every operation of the document has at least one real answer.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys().filter(|m| *m != "parameters") {
            assert!(
                a.0.iter().any(|x| x["path"] == *path && x["method"] == *method),
                "no answer of {method} {path} was collected"
            );
        }
    }
}
