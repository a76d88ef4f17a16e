//! The one error shape of the API: `{"error": {type, code, message, param?, channel_code?,
//! request_id}}`, written once here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use paymux_core::ChannelError;
use paymux_engine::EngineError;
use paymux_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

tokio::task_local! {
    /// The id of the request being served, set by the request-id middleware for its whole run.
    pub static REQUEST_ID: String;
}

/// Every error answer: `{"error": {...}}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

/// The error body, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    #[serde(rename = "type")]
    #[schema(schema_with = error_types)]
    pub kind: &'static str,
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_code: Option<String>,
    /// The payment or refund the failed call left behind (pending, to be settled by a query).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
    pub request_id: String,
}

/// Every `type` an error can have: the second argument of each `ApiError::new` below.
fn error_types() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some([
            "invalid_request",
            "authentication_error",
            "not_found",
            "conflict",
            "channel_declined",
            "channel_unavailable",
            "channel_timeout",
            "store_unavailable",
            "api_error",
        ]))
        .build()
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: Box<ErrorBody>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: Box::new(ErrorBody {
                kind,
                code: code.to_owned(),
                message: message.into(),
                param: None,
                channel_code: None,
                object_id: None,
                request_id: REQUEST_ID.try_with(Clone::clone).unwrap_or_default(),
            }),
        }
    }

    pub fn invalid(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", code, message)
    }

    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Self::invalid("parameter_invalid", message).with_param(param)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", "unauthorized", message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "resource_missing", format!("no such {what}"))
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", code, message)
    }

    pub fn store(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "store_unavailable",
            "the store is unavailable; nothing was changed, retry with the same Idempotency-Key",
        )
    }

    /// The store failed after the channel was called: something may have moved at the channel,
    /// and the sweeper will settle the object from the channel's truth. Not a "nothing changed"
    /// 503, so an idempotent retry replays this instead of calling the channel again.
    pub fn store_after_channel(e: StoreError, object_id: impl ToString) -> Self {
        tracing::error!(error = %e, object = %object_id.to_string(), "store failure after a channel call");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "store_failed_after_channel_call",
            "the channel was called but its answer could not be recorded; the object stays pending \
             and is settled from the channel shortly: read it again, do not create a new one",
        )
        .with_object(object_id)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "internal", message)
    }

    /// Maps a channel call's failure to the API. Unknown outcomes never say "failed".
    pub fn channel(e: ChannelError) -> Self {
        match e {
            ChannelError::Declined { code, message } => {
                let mut err = Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "channel_declined",
                    "channel_declined",
                    format!("the channel declined: {message}"),
                );
                err.body.channel_code = Some(code);
                err
            }
            ChannelError::Unknown { reason, timed_out: true } => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "channel_timeout",
                "channel_timeout",
                format!(
                    "the channel did not answer in time ({reason}); the outcome is unknown and will be settled by a query"
                ),
            ),
            ChannelError::Unknown { reason, timed_out: false } => Self::new(
                StatusCode::BAD_GATEWAY,
                "channel_unavailable",
                "channel_unavailable",
                format!(
                    "the channel's answer could not be used ({reason}); the outcome is unknown and will be settled by a query"
                ),
            ),
            ChannelError::Invalid { message } => Self::invalid(
                "channel_rejected_request",
                format!("the channel refused the request as invalid: {message}"),
            ),
            ChannelError::Unverified { reason } => Self::new(
                StatusCode::BAD_GATEWAY,
                "channel_unavailable",
                "channel_unverified",
                format!("the channel's message failed verification: {reason}"),
            ),
        }
    }

    pub fn with_param(mut self, param: &str) -> Self {
        self.body.param = Some(param.to_owned());
        self
    }

    pub fn with_object(mut self, id: impl ToString) -> Self {
        self.body.object_id = Some(id.to_string());
        self
    }
}

/// The one mapping from what the engine reports to the API's error shape.
impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::InvalidInput { field, message } => ApiError::invalid_param(field, message),
            EngineError::NotFound { what } => ApiError::not_found(what),
            EngineError::ChannelMismatch { why } => ApiError::conflict("channel_mismatch", why),
            EngineError::Channel(e) => ApiError::channel(e),
            EngineError::ChannelCall { source, object } => {
                ApiError::channel(source).with_object(object)
            }
            e @ EngineError::PaymentSucceeded => {
                ApiError::conflict("payment_succeeded", e.to_string())
            }
            e @ EngineError::PaymentFailed => ApiError::conflict("payment_failed", e.to_string()),
            e @ EngineError::PaymentNotPending { .. } => {
                ApiError::conflict("payment_not_pending", e.to_string())
            }
            e @ EngineError::PaidBeforeClose { payment, .. } => {
                ApiError::conflict("payment_succeeded", e.to_string()).with_object(payment)
            }
            EngineError::Rejected { code, field, message } => {
                let err = ApiError::invalid(code, message);
                match field {
                    Some(f) => err.with_param(f),
                    None => err,
                }
            }
            EngineError::DuplicateNumber { field, message, object } => {
                let err =
                    ApiError::conflict(&format!("duplicate_{field}"), message).with_param(field);
                match object {
                    Some(id) => err.with_object(id),
                    None => err,
                }
            }
            EngineError::StoreAfterChannel { source, object } => {
                ApiError::store_after_channel(source, object)
            }
            EngineError::Store(e) => ApiError::store(e),
            e @ EngineError::Interrupted { .. } => ApiError::internal(e.to_string()),
            e @ (EngineError::Misconfigured { .. }
            | EngineError::AccountGone(_)
            | EngineError::NoAttempt(_)
            | EngineError::BoundObjectGone { .. }
            | EngineError::Corrupt { .. }
            | EngineError::Encode { .. }) => ApiError::internal(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::store(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(mut self) -> Response {
        // An error made on a task of its own (the channel call of a create or refund runs on
        // one, so that a client hanging up cannot cut it short) was made outside the request's
        // scope; it gets the request's id here, where the answer is written.
        if self.body.request_id.is_empty() {
            self.body.request_id = REQUEST_ID.try_with(Clone::clone).unwrap_or_default();
        }
        (self.status, axum::Json(ErrorResponse { error: *self.body })).into_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.body.code, self.body.message)
    }
}
