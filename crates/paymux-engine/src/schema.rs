//! The JSON Schemas of the API objects' fields whose Rust type says less than the API promises:
//! a string that is one of a fixed list (taken from the domain's own lists, so they cannot
//! drift), and the payer's action, kept as JSON on the payment. The objects derive the rest
//! (`utoipa::ToSchema`).

use paymux_core::{
    AttemptStatus, ChannelKind, EventType, PaymentMethod, PaymentStatus, RefundStatus,
};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};

fn strings<'a>(values: impl IntoIterator<Item = &'a str>) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values))
}

fn nullable(b: ObjectBuilder) -> ObjectBuilder {
    b.schema_type(SchemaType::from_iter([Type::String, Type::Null]))
}

/// A string that is always `value`: the `object` field of every object.
fn constant(value: &str) -> Schema {
    Schema::Object(strings([value]).build())
}

pub(crate) fn payment_object() -> Schema {
    constant("payment")
}

pub(crate) fn refund_object() -> Schema {
    constant("refund")
}

pub(crate) fn event_object() -> Schema {
    constant("event")
}

pub(crate) fn list_object() -> Schema {
    constant("list")
}

pub(crate) fn webhook_endpoint_object() -> Schema {
    constant("webhook_endpoint")
}

pub(crate) fn currency() -> Schema {
    Schema::Object(strings(["CNY"]).build())
}

pub(crate) fn payment_status() -> Schema {
    let all = [
        PaymentStatus::Pending,
        PaymentStatus::Succeeded,
        PaymentStatus::Failed,
        PaymentStatus::Closed,
    ];
    Schema::Object(strings(all.map(PaymentStatus::as_str)).build())
}

pub(crate) fn attempt_status() -> Schema {
    let all = [
        AttemptStatus::Pending,
        AttemptStatus::Succeeded,
        AttemptStatus::Closed,
        AttemptStatus::Failed,
        AttemptStatus::DuplicatePaid,
    ];
    Schema::Object(strings(all.map(AttemptStatus::as_str)).build())
}

pub(crate) fn refund_status() -> Schema {
    let all = [RefundStatus::Pending, RefundStatus::Succeeded, RefundStatus::Failed];
    Schema::Object(strings(all.map(RefundStatus::as_str)).build())
}

pub(crate) fn channel() -> Schema {
    Schema::Object(strings(ChannelKind::ALL.map(ChannelKind::as_str)).build())
}

/// A channel, or `null` to let routing pick one.
pub(crate) fn channel_or_null() -> Schema {
    Schema::Object(nullable(strings(ChannelKind::ALL.map(ChannelKind::as_str))).build())
}

const METHODS: [PaymentMethod; 8] = [
    PaymentMethod::Qr,
    PaymentMethod::Page,
    PaymentMethod::Wap,
    PaymentMethod::H5,
    PaymentMethod::App,
    PaymentMethod::Jsapi,
    PaymentMethod::MiniProgram,
    PaymentMethod::Barcode,
];

pub(crate) fn method() -> Schema {
    Schema::Object(strings(METHODS.map(PaymentMethod::as_str)).build())
}

pub(crate) fn event_type() -> Schema {
    Schema::Object(strings(EventType::ALL.map(EventType::as_str)).build())
}

/// The event types an endpoint receives; `null` for all.
pub(crate) fn event_types_or_null() -> Schema {
    Schema::Array(
        utoipa::openapi::schema::ArrayBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
            .items(strings(EventType::ALL.map(EventType::as_str)))
            .build(),
    )
}

fn action_variant(kind: &str, fields: &[(&str, Schema)], description: &str) -> RefOr<Schema> {
    let mut b = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .property("type", constant(kind))
        .required("type");
    for (name, schema) in fields {
        b = b.property(*name, schema.clone()).required(*name);
    }
    RefOr::T(Schema::Object(b.build()))
}

fn string() -> Schema {
    Schema::Object(ObjectBuilder::new().schema_type(Type::String).build())
}

/// What the payer does next, or `null` while the channel has not answered.
pub(crate) fn action_or_null() -> Schema {
    let string_map = Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(string()))
            .build(),
    );
    let any_object = Schema::Object(ObjectBuilder::new().schema_type(Type::Object).build());
    let null = Schema::Object(ObjectBuilder::new().schema_type(Type::Null).build());
    Schema::OneOf(
        OneOfBuilder::new()
            .item(action_variant(
                "qr_code",
                &[("code_url", string())],
                "A QR code the payer scans.",
            ))
            .item(action_variant("redirect", &[("url", string())], "A page to send the payer to."))
            .item(action_variant(
                "form",
                &[("method", string()), ("url", string()), ("fields", string_map)],
                "An auto-submitting form the payer's browser posts.",
            ))
            .item(action_variant(
                "sdk",
                &[("params", any_object)],
                "Parameters for the channel's client SDK.",
            ))
            .item(RefOr::T(null))
            .build(),
    )
}
