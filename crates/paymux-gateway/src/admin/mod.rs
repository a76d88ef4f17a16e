//! `/admin`: the operator's web page, server-rendered HTML over the engine's operator use cases
//! (`paymux_engine::operator`). This module maps requests and forms to those calls and renders
//! their answers; it decides nothing.
//!
//! Sign-in takes an operator token (a form, or the link `paymux up` prints, whose token leaves
//! the address bar at once) and sets a session cookie: `HttpOnly`, `SameSite=Strict`,
//! `Path=/admin` (and `Secure` behind an https public URL). Every page needs it; without it a
//! page answers with a redirect to the sign-in. Every POST must come from this origin (`Origin`,
//! or `Sec-Fetch-Site`, when the browser sends them) and carry the session's CSRF token, compared
//! in constant time: otherwise it is refused with a 403 and nothing is done.

mod chart;
mod html;

use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use paymux_core::{EventId, PaymentId};
use paymux_engine::operator::{
    AdminPaymentQuery, OperatorAction, OperatorSession, SESSION_TTL, StatsRange,
};
use paymux_engine::{Engine, EngineError};
use serde::Deserialize;

use crate::error::ApiError;

/// The session cookie's name.
pub const COOKIE: &str = "paymux_admin";

/// The `/admin` routes, with the security headers every admin answer carries.
pub fn routes() -> Router<Engine> {
    Router::new()
        .route("/admin", get(|| async { Redirect::to("/admin/payments") }))
        .route("/admin/login", get(login_page).post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/payments", get(payments))
        .route("/admin/payments/{id}", get(payment))
        .route("/admin/payments/{id}/sync", post(sync))
        .route("/admin/payments/{id}/close", post(close))
        .route("/admin/payments/{id}/events/{event}/redeliver", post(redeliver))
        .route("/admin/stats", get(stats))
        .layer(middleware::from_fn(security_headers))
}

/// No framing, no scripts, no third-party anything, nothing cached, no referrer leaving the site.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: with it, browsers send `Origin: null` on the page's own forms. The
    // sign-in link's answer, whose address holds a token, sets `no-referrer` itself.
    if !h.contains_key(header::REFERRER_POLICY) {
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    res
}

/// The value of the session cookie in a request, if it has one.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// A signed-in operator: the request's session cookie names a live session. A request without
/// one is sent to the sign-in page.
pub struct Operator {
    session: OperatorSession,
    cookie: String,
}

impl FromRequestParts<Engine> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, engine: &Engine) -> Result<Self, Response> {
        let to_login = || Redirect::to("/admin/login").into_response();
        let cookie = session_cookie(&parts.headers).ok_or_else(to_login)?;
        match engine.operator_session(&cookie).await {
            Ok(Some(session)) => Ok(Operator { session, cookie }),
            Ok(None) => Err(to_login()),
            Err(e) => Err(failure(e, None)),
        }
    }
}

/// An engine error as an HTML page with the API's status for it.
fn failure(e: EngineError, csrf: Option<&str>) -> Response {
    let api = ApiError::from(e);
    let status = api.status;
    (status, Html(html::error(status.as_u16(), &api.body.message, csrf))).into_response()
}

fn refused(why: &str, csrf: Option<&str>) -> Response {
    (StatusCode::FORBIDDEN, Html(html::error(403, why, csrf))).into_response()
}

/// Whether a POST comes from a page of this gateway, by what the browser says of its origin.
/// A request that says nothing (not a browser) still needs the CSRF token.
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host_of_origin =
            origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        return host.is_some() && host_of_origin == host;
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some(site) => site == "same-origin" || site == "none",
        None => true,
    }
}

/// Why a state-changing form is refused, if it is: every one passes these checks before
/// anything is done.
fn post_refusal(headers: &HeaderMap, op: &Operator, csrf: Option<&str>) -> Option<&'static str> {
    if !same_origin(headers) {
        return Some("refused: the form was not posted from this site");
    }
    if !csrf.is_some_and(|given| op.session.csrf_ok(given)) {
        return Some("refused: the form's CSRF token is missing or wrong");
    }
    None
}

fn session_cookie_header(engine: &Engine, value: &str, max_age: u64) -> HeaderValue {
    let secure = if engine.config.public_url.starts_with("https://") { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/admin; Max-Age={max_age}{secure}"
    );
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    token: Option<String>,
}

/// The sign-in form; with `?token=`, the sign-in itself (the link `paymux up` prints).
async fn login_page(State(engine): State<Engine>, Query(q): Query<LoginQuery>) -> Response {
    match q.token {
        None => Html(html::login(None)).into_response(),
        Some(token) => match sign_in(&engine, &token).await {
            // Not a redirect: a page of ours moves on, so the SameSite=Strict cookie goes with
            // the next request even when the link was opened from another site or a terminal.
            Ok(cookie) => (
                [
                    (header::SET_COOKIE, cookie),
                    (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
                ],
                Html(html::signed_in()),
            )
                .into_response(),
            Err(res) => res,
        },
    }
}

async fn sign_in(engine: &Engine, token: &str) -> Result<HeaderValue, Response> {
    match engine.sign_in(token).await {
        Ok(Some(signed)) => {
            Ok(session_cookie_header(engine, &signed.cookie, SESSION_TTL.as_secs()))
        }
        Ok(None) => Err((
            StatusCode::UNAUTHORIZED,
            Html(html::login(Some("That operator token is not valid."))),
        )
            .into_response()),
        Err(e) => Err(failure(e, None)),
    }
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(engine): State<Engine>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if !same_origin(&headers) {
        return refused("refused: the form was not posted from this site", None);
    }
    match sign_in(&engine, &f.token).await {
        Ok(cookie) => {
            ([(header::SET_COOKIE, cookie)], Redirect::to("/admin/payments")).into_response()
        }
        Err(res) => res,
    }
}

/// What every action form posts.
#[derive(Debug, Deserialize)]
struct ActionForm {
    csrf: Option<String>,
}

async fn logout(
    State(engine): State<Engine>,
    headers: HeaderMap,
    op: Operator,
    Form(f): Form<ActionForm>,
) -> Response {
    if let Some(why) = post_refusal(&headers, &op, f.csrf.as_deref()) {
        return refused(why, Some(&op.session.csrf_token));
    }
    if let Err(e) = engine.sign_out(&op.cookie).await {
        return failure(e, None);
    }
    ([(header::SET_COOKIE, session_cookie_header(&engine, "", 0))], Redirect::to("/admin/login"))
        .into_response()
}

#[derive(Debug, Deserialize)]
struct PaymentsQuery {
    status: Option<String>,
    channel: Option<String>,
    method: Option<String>,
    merchant_order_no: Option<String>,
    from: Option<String>,
    to: Option<String>,
    before: Option<String>,
}

async fn payments(
    State(engine): State<Engine>,
    op: Operator,
    Query(q): Query<PaymentsQuery>,
) -> Response {
    let q = AdminPaymentQuery {
        status: q.status,
        channel: q.channel,
        method: q.method,
        merchant_order_no: q.merchant_order_no,
        from: q.from,
        to: q.to,
        before: q.before,
    };
    let csrf = &op.session.csrf_token;
    match engine.admin_payments(&q).await {
        Ok(list) => Html(html::payments(&q, &list, csrf)).into_response(),
        Err(e) => failure(e, Some(csrf)),
    }
}

async fn payment(State(engine): State<Engine>, op: Operator, Path(id): Path<String>) -> Response {
    let csrf = &op.session.csrf_token;
    match engine.payment_detail(&id).await {
        Ok(detail) => Html(html::payment(&detail, csrf)).into_response(),
        Err(e) => failure(e, Some(csrf)),
    }
}

#[derive(Debug, Deserialize)]
struct StatsQuery {
    range: Option<String>,
}

async fn stats(
    State(engine): State<Engine>,
    op: Operator,
    Query(q): Query<StatsQuery>,
) -> Response {
    let csrf = &op.session.csrf_token;
    let result = match StatsRange::parse(q.range.as_deref()) {
        Ok(range) => engine.payment_stats(range).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(s) => Html(html::stats(&s, csrf)).into_response(),
        Err(e) => failure(e, Some(csrf)),
    }
}

/// Runs an action on a payment after the form's checks, then shows the payment again (its
/// timeline now has the action and how it went).
async fn act(
    engine: &Engine,
    headers: &HeaderMap,
    op: &Operator,
    form: &ActionForm,
    id: &str,
    action: impl FnOnce() -> Result<OperatorAction, EngineError>,
) -> Response {
    let csrf = Some(op.session.csrf_token.as_str());
    if let Some(why) = post_refusal(headers, op, form.csrf.as_deref()) {
        return refused(why, csrf);
    }
    let Ok(payment) = id.parse::<PaymentId>() else {
        return failure(EngineError::NotFound { what: "payment" }, csrf);
    };
    let action = match action() {
        Ok(a) => a,
        Err(e) => return failure(e, csrf),
    };
    match engine.operator_action(&op.session, payment, action).await {
        Ok(_) => Redirect::to(&format!("/admin/payments/{payment}")).into_response(),
        Err(e) => failure(e, csrf),
    }
}

async fn sync(
    State(engine): State<Engine>,
    headers: HeaderMap,
    op: Operator,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Response {
    act(&engine, &headers, &op, &f, &id, || Ok(OperatorAction::Sync)).await
}

async fn close(
    State(engine): State<Engine>,
    headers: HeaderMap,
    op: Operator,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Response {
    act(&engine, &headers, &op, &f, &id, || Ok(OperatorAction::Close)).await
}

async fn redeliver(
    State(engine): State<Engine>,
    headers: HeaderMap,
    op: Operator,
    Path((id, event)): Path<(String, String)>,
    Form(f): Form<ActionForm>,
) -> Response {
    act(&engine, &headers, &op, &f, &id, || {
        event
            .parse::<EventId>()
            .map(OperatorAction::Redeliver)
            .map_err(|_| EngineError::NotFound { what: "event" })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn a_post_from_another_origin_is_not_same_origin() {
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8080"), ("origin", "null")])));
        assert!(!same_origin(&headers(&[("origin", "http://127.0.0.1:8080")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(same_origin(&headers(&[])));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; paymux_admin=abc; b=2")]);
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
        assert_eq!(session_cookie(&headers(&[("cookie", "paymux_admin_x=1")])), None);
    }
}
