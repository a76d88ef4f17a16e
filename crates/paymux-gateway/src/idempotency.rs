//! `Idempotency-Key` on every POST of the merchant API.
//!
//! The first response for a (merchant, key) is stored with a hash of the request and replayed for
//! the same key and request for 24 hours. The same key with a different request is a 409, and so
//! is the same key while its first request is still running: a retry never makes a second channel
//! call. A response that changed nothing because the store was down is not kept, so the merchant's
//! retry runs again.
//!
//! The handler binds the key to the payment or refund it writes, in the same transaction as the
//! object ([`IdempotencyKey`]). If the process dies before the answer is stored, the retry (once
//! the dead claim's lease has run out) answers with that object, never with a 409 for the order
//! number the first run already used. A create's use case keeps its answer itself, in the
//! transaction that records the channel's answer ([`created`]): that retry then gets the very
//! bytes, and the create saves a write.

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use paymux_crypto::sha256_hex;
use paymux_engine::Created;
use paymux_store::IdempotencyBegin;
use serde::Serialize;

use crate::auth::Merchant;
use crate::error::ApiError;
use paymux_engine::Engine;

pub const HEADER: &str = "idempotency-key";
const MAX_BODY: usize = 64 * 1024;

/// The `Idempotency-Key` this request claimed, for the handler to bind to the object it writes.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

impl IdempotencyKey {
    /// The key of a request, if it came with one.
    pub fn of(key: &Option<axum::Extension<IdempotencyKey>>) -> Option<&str> {
        key.as_ref().map(|axum::Extension(k)| k.0.as_str())
    }
}

/// Marks a response whose answer the use case kept for its key already: the layer passes it on.
#[derive(Debug, Clone, Copy)]
struct AnswerKept;

// A kept answer is replayed with the status the engine kept it with.
const _: () = assert!(Created::<()>::STATUS == StatusCode::CREATED.as_u16());

/// The response of a create, 201: the bytes the use case kept as its key's answer, sent as they
/// are, or else the object (whose answer the layer keeps, if the request has a key).
pub fn created<T: Serialize>(created: Created<T>) -> Response {
    match created.answer {
        Some(body) => {
            let mut res = json_bytes(StatusCode::CREATED, body);
            res.extensions_mut().insert(AnswerKept);
            res
        }
        None => (StatusCode::CREATED, Json(created.object)).into_response(),
    }
}

pub async fn layer(State(state): State<Engine>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST || !req.uri().path().starts_with("/v1/") {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get(HEADER).cloned() else {
        return next.run(req).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 => k.to_owned(),
        _ => {
            return ApiError::invalid_param(
                "Idempotency-Key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
            .into_response();
        }
    };
    let (mut parts, body) = req.into_parts();
    let merchant = match <Merchant as axum::extract::FromRequestParts<Engine>>::from_request_parts(
        &mut parts, &state,
    )
    .await
    {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    // The handler finds the merchant here instead of looking the key up a second time.
    parts.extensions.insert(merchant);
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::invalid("body_too_large", "the request body is too large")
                .into_response();
        }
    };
    // The request's identity: the key's mode, method, path and exact body. The mode keeps a test
    // key's stored answer from ever being replayed to a live key (a 409 reused instead).
    let mut canonical =
        format!("{} {} {}\n", merchant.mode(), parts.method, parts.uri.path()).into_bytes();
    canonical.extend_from_slice(&bytes);
    let hash = sha256_hex(&canonical);
    let caller = merchant.caller();
    let begin = state.idempotency_begin(caller, &key, &hash).await;
    match begin {
        Err(e) => return ApiError::from(e).into_response(),
        Ok(IdempotencyBegin::Mismatch) => {
            return ApiError::conflict(
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
            )
            .into_response();
        }
        Ok(IdempotencyBegin::InFlight) => {
            return ApiError::conflict(
                "idempotency_key_in_flight",
                "a request with this Idempotency-Key is still being processed; retry later",
            )
            .into_response();
        }
        Ok(IdempotencyBegin::Replay { status, body }) => return replay(status, body),
        Ok(IdempotencyBegin::Recover { object_id }) => {
            return recover(&state, merchant, &key, &hash, &object_id).await;
        }
        Ok(IdempotencyBegin::Started) => {}
    }
    parts.extensions.insert(IdempotencyKey(key.clone()));
    let res = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    if res.extensions().get::<AnswerKept>().is_some() {
        return res;
    }
    let status = res.status();
    let (res_parts, res_body) = res.into_parts();
    let res_bytes = match to_bytes(res_body, usize::MAX).await {
        Ok(b) => b,
        Err(_) => {
            let _ = state.idempotency_release(caller, &key).await;
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let kept =
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            // Nothing changed: let the retry run again.
            state.idempotency_release(caller, &key).await.map(|()| true)
        } else {
            state.idempotency_finish(caller, &key, status.as_u16(), &res_bytes).await
        };
    match kept {
        Ok(true) => {}
        // This request outlived its claim's lease and a retry recovered its object first: that
        // answer stays the key's, and this caller is still told what its own request did.
        Ok(false) => tracing::info!("a recovered answer was kept for this key first"),
        // The claim expires after its lease; until then a retry is told it is in flight.
        Err(e) => tracing::warn!(error = %e, "could not store the idempotent response"),
    }
    Response::from_parts(res_parts, Body::from(res_bytes))
}

/// An answer already rendered to JSON.
fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A kept answer, sent again.
fn replay(status: u16, body: Vec<u8>) -> Response {
    let mut res = json_bytes(StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body);
    res.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    res
}

/// Answers a retry whose first run died after writing `object_id`: the object as it is now, 200,
/// kept as the key's response from here on. If an answer was kept first (the first run was only
/// slow, or another retry recovered), that one is sent instead.
async fn recover(
    state: &Engine,
    merchant: Merchant,
    key: &str,
    hash: &str,
    object_id: &str,
) -> Response {
    let caller = merchant.caller();
    // On failure the claim stays bound; the next retry recovers again.
    let object = match state.recovered_object(caller, object_id).await {
        Ok(o) => o,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let body = object.to_string().into_bytes();
    match state.idempotency_finish(caller, key, 200, &body).await {
        Ok(true) => {}
        Ok(false) => {
            if let Ok(IdempotencyBegin::Replay { status, body }) =
                state.idempotency_begin(caller, key, hash).await
            {
                return replay(status, body);
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not store the recovered idempotent response"),
    }
    tracing::info!(object = object_id, "a retry recovered the object its lost request created");
    json_bytes(StatusCode::OK, body)
}
