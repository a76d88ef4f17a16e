#![allow(clippy::unwrap_used)]
//! The OpenAPI document against the router it describes: every operation it lists is a route
//! the router answers, every route it serves under `/v1` is in it (both come from one list,
//! `openapi::v1`), and each operation carries the conventions every route shares.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use paymux_engine::{Engine, GatewayConfig};
use paymux_store::SqliteStore;
use serde_json::Value;
use tower::ServiceExt;

async fn app() -> (axum::Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("paymux.db")).await.unwrap();
    let engine = Engine::new(Arc::new(store), GatewayConfig::new("http://127.0.0.1:1"));
    (paymux_gateway::router(engine), dir)
}

async fn send(app: &axum::Router, method: Method, path: &str) -> (StatusCode, Value) {
    let req = Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Every (method, path) the document lists.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

#[tokio::test]
async fn the_served_document_is_openapi_3_1_and_lists_exactly_the_merchant_api() {
    let (app, _dir) = app().await;
    let (status, doc) = send(&app, Method::GET, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc, serde_json::to_value(paymux_gateway::openapi_document()).unwrap());
    let expected: BTreeSet<(String, String)> = [
        ("POST", "/v1/payments"),
        ("GET", "/v1/payments"),
        ("GET", "/v1/payments/{id}"),
        ("POST", "/v1/payments/{id}/sync"),
        ("POST", "/v1/payments/{id}/close"),
        ("POST", "/v1/payments/{id}/attempts"),
        ("POST", "/v1/payments/{id}/refunds"),
        ("GET", "/v1/payments/{id}/refunds"),
        ("GET", "/v1/refunds"),
        ("GET", "/v1/refunds/{id}"),
        ("GET", "/v1/events"),
        ("GET", "/v1/events/{id}"),
        ("POST", "/v1/events/{id}/redeliver"),
        ("POST", "/v1/webhook_endpoints"),
        ("GET", "/v1/webhook_endpoints"),
        ("DELETE", "/v1/webhook_endpoints/{id}"),
        ("POST", "/v1/webhook_endpoints/{id}/rotate_secret"),
        ("POST", "/v1/receivers"),
        ("GET", "/v1/receivers"),
        ("GET", "/v1/receivers/{id}"),
        ("DELETE", "/v1/receivers/{id}"),
        ("POST", "/v1/payments/{id}/settle"),
        ("GET", "/v1/ledger"),
        ("GET", "/v1/balances"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(operations(&doc), expected);
}

#[tokio::test]
async fn every_documented_operation_is_a_route_and_every_other_v1_path_is_not() {
    let (app, _dir) = app().await;
    let doc = serde_json::to_value(paymux_gateway::openapi_document()).unwrap();
    let ops = operations(&doc);
    let paths: BTreeSet<&String> = ops.iter().map(|(_, p)| p).collect();
    for path in &paths {
        let concrete = path.replace("{id}", "pay_x");
        for method in [Method::GET, Method::POST, Method::DELETE] {
            let documented = ops.contains(&(method.to_string(), (*path).clone()));
            let (status, body) = send(&app, method.clone(), &concrete).await;
            if documented {
                // The route is there: it asks for the API key before anything else.
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
            } else {
                // An undocumented method on a documented path is no route at all.
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is routed");
            }
        }
    }
    let (status, body) = send(&app, Method::GET, "/v1/nothing_here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["message"], "no such route");
}

#[tokio::test]
async fn every_operation_has_the_bearer_key_its_errors_and_on_posts_the_idempotency_key() {
    let doc = serde_json::to_value(paymux_gateway::openapi_document()).unwrap();
    assert_eq!(doc["components"]["securitySchemes"]["api_key"]["scheme"], "bearer");
    assert_eq!(doc["security"], serde_json::json!([{"api_key": []}]));
    let mut ids = BTreeSet::new();
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        assert!(ids.insert(op["operationId"].as_str().unwrap().to_owned()), "{method} {path}");
        for status in ["400", "401", "404", "500", "503"] {
            let error = &op["responses"][status]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(error, "#/components/schemas/Error", "{method} {path} {status}");
        }
        let success = op["responses"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(s, _)| s.starts_with('2'))
            .map(|(_, r)| &r["content"]["application/json"]["schema"]);
        assert!(success.is_some_and(|s| !s.is_null()), "{method} {path} has a typed answer");
        let idempotency = op["parameters"].as_array().is_some_and(|ps| {
            ps.iter().any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header")
        });
        assert_eq!(idempotency, method == "POST", "{method} {path}");
    }
}
