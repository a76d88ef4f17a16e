//! `GET /openapi.json`: the OpenAPI 3.1 document of the merchant API, generated from the code.
//!
//! The `/v1` routes are registered only here, through `utoipa_axum::routes!`, which takes each
//! route's path and method from the handler's `#[utoipa::path]`: the router and the document are
//! built from that one list, so a `/v1` route cannot exist without its entry in the document. The
//! conventions every route shares (the bearer key, `Idempotency-Key` on POSTs, the error answers
//! any request can get) are added to every operation here, not repeated on each handler.

use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, Required};
use utoipa::{OpenApi as _, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ErrorResponse;
use crate::{events, payments, refunds, settlement, webhooks};
use paymux_engine::Engine;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "paymux",
        description = "One HTTP API for WeChat Pay, Alipay and UnionPay. Amounts are integer \
                       minor units (fen). Every object is scoped to the merchant of the key, and \
                       to its mode (a test key sees only test objects).",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    components(schemas(ErrorResponse)),
    tags(
        (name = "payments", description = "A merchant's orders and what the payer does to pay them."),
        (name = "refunds", description = "Money going back to the payer, each refund its own object."),
        (name = "events", description = "What changed, in commit order; also delivered as webhooks."),
        (name = "webhook_endpoints", description = "Where events are delivered, signed."),
        (name = "settlement", description = "Held payments split between receivers, and the ledger of every movement.")
    )
)]
struct ApiDoc;

/// The name of the bearer API key scheme.
const BEARER: &str = "api_key";

/// The merchant API: every `/v1` route, with the document that describes it.
pub(crate) fn v1() -> OpenApiRouter<Engine> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(payments::create, payments::list))
        .routes(routes!(payments::get))
        .routes(routes!(payments::sync))
        .routes(routes!(payments::close))
        .routes(routes!(payments::create_attempt))
        .routes(routes!(refunds::create, refunds::list_for_payment))
        .routes(routes!(refunds::list))
        .routes(routes!(refunds::get))
        .routes(routes!(events::list))
        .routes(routes!(webhooks::get_event))
        .routes(routes!(webhooks::redeliver))
        .routes(routes!(webhooks::create_endpoint, webhooks::list_endpoints))
        .routes(routes!(webhooks::delete_endpoint))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(settlement::create_receiver, settlement::list_receivers))
        .routes(routes!(settlement::get_receiver, settlement::delete_receiver))
        .routes(routes!(settlement::settle))
        .routes(routes!(settlement::ledger))
        .routes(routes!(settlement::balances))
}

/// The whole document, as `GET /openapi.json` serves it.
pub fn document() -> OpenApi {
    let (_, doc) = v1().split_for_parts();
    finish(doc)
}

/// Adds what every operation shares: the bearer key, `Idempotency-Key` on every POST, and the
/// error answers any request can get, each in the one error shape.
pub(crate) fn finish(mut doc: OpenApi) -> OpenApi {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("An API key: `sk_test_...` or `sk_live_...`."))
                .build(),
        ),
    );
    doc.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
    for item in doc.paths.paths.values_mut() {
        let methods =
            [(false, item.get.as_mut()), (true, item.post.as_mut()), (false, item.delete.as_mut())];
        for (is_post, op) in methods {
            if let Some(op) = op {
                shared_errors(op, is_post);
                if is_post {
                    idempotency_key(op);
                }
            }
        }
    }
    doc
}

fn error(description: &str) -> utoipa::openapi::Response {
    let schema = Ref::from_schema_name(ErrorResponse::name());
    ResponseBuilder::new()
        .description(description)
        .content("application/json", Content::new(Some(schema)))
        .build()
}

fn shared_errors(op: &mut Operation, is_post: bool) {
    let mut shared = vec![
        ("400", "invalid_request: a parameter is missing or wrong (`param` names it)."),
        ("401", "authentication_error: no API key, or not a valid one."),
        ("404", "not_found: no such object for this merchant and mode, or no such route."),
        ("500", "api_error: something failed on our side; `object_id` names what it left."),
        ("503", "store_unavailable: nothing was changed; retry with the same Idempotency-Key."),
    ];
    if is_post {
        shared.push((
            "409",
            "conflict: the object's state forbids it, a number is already used (`object_id` \
             names the existing object), or the Idempotency-Key was used with another body or \
             is still in flight.",
        ));
    }
    for (status, description) in shared {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| error(description).into());
    }
}

fn idempotency_key(op: &mut Operation) {
    let param = ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "The same key and body within 24 hours replays the first answer; the same key with \
             another body, or while the first request runs, is a 409.",
        ))
        .schema(Some(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .max_length(Some(255)),
        ))
        .build();
    op.parameters.get_or_insert_with(Vec::new).push(param);
}
