//! `POST /callbacks/{channel}/{account_id}`: the channels' asynchronous notifications, turned into
//! the engine's input; the engine verifies, records, applies and decides the reply
//! (`paymux_engine::Engine::handle_notification`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use paymux_core::{AccountId, ChannelKind, InboundRequest};
use paymux_engine::{Engine, NotificationReply};

pub async fn receive(
    State(state): State<Engine>,
    Path((channel, account_id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (Ok(channel), Ok(account_id)) =
        (channel.parse::<ChannelKind>(), account_id.parse::<AccountId>())
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let inbound = InboundRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        body: body.to_vec(),
    };
    match state.handle_notification(channel, account_id, inbound).await {
        NotificationReply::UnknownAccount => StatusCode::NOT_FOUND.into_response(),
        NotificationReply::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        NotificationReply::Misconfigured => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        NotificationReply::Ack(ack) => {
            let status =
                StatusCode::from_u16(ack.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, [(header::CONTENT_TYPE, ack.content_type)], ack.body).into_response()
        }
    }
}
