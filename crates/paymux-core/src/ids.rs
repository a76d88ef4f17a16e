use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {kind} id (expected {prefix}<32 hex digits>)")]
pub struct IdError {
    kind: &'static str,
    prefix: &'static str,
    value: String,
}

/// Declares a prefixed, time-ordered id type: `<prefix><UUIDv7 as 32 lower-case hex digits>`.
macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id; ids made later sort after ids made earlier.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn uuid(self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0.simple())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let err = || IdError { kind: $kind, prefix: $prefix, value: s.to_owned() };
                let body = s.strip_prefix($prefix).ok_or_else(err)?;
                if body.len() != 32 || !body.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(err());
                }
                Uuid::try_parse(body).map(Self).map_err(|_| err())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id!(
    /// A payment: the merchant's order as paymux holds it.
    PaymentId, "pay_", "payment"
);
prefixed_id!(
    /// A refund of (part of) a payment.
    RefundId, "re_", "refund"
);
prefixed_id!(
    /// An attempt: one try at one channel to pay a payment, with its own channel order number.
    AttemptId, "att_", "attempt"
);
prefixed_id!(
    /// An event written to the outbox with the state change that caused it.
    EventId, "evt_", "event"
);
prefixed_id!(
    /// A merchant: the tenant every object is scoped to.
    MerchantId, "mch_", "merchant"
);
prefixed_id!(
    /// A channel account: one merchant's credentials at one channel.
    AccountId, "acct_", "account"
);
prefixed_id!(
    /// A receiver of profit-sharing splits, registered by a merchant.
    ReceiverId, "rcv_", "receiver"
);

/// The order number paymux sends to a channel (`out_trade_no`, `orderId`, `out_request_no`,
/// `out_refund_no`): 32 upper-case hex digits of a UUIDv7, which fits every channel's rules
/// (8-32 of `[0-9A-Za-z]`) and sorts by time.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChannelOrderNo(String);

impl ChannelOrderNo {
    pub fn generate() -> Self {
        Self(Uuid::now_v7().simple().to_string().to_ascii_uppercase())
    }

    /// The number of an attempt: its id's body, so either names the other.
    pub fn of_attempt(id: AttemptId) -> Self {
        Self(id.uuid().simple().to_string().to_ascii_uppercase())
    }

    /// Accepts any number a channel might echo back: 1-64 characters, none of them control
    /// characters. Whether it is one of ours is decided by looking it up, not by its shape.
    pub fn from_channel(s: &str) -> Option<Self> {
        let ok = !s.is_empty() && s.len() <= 64 && !s.chars().any(char::is_control);
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChannelOrderNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelOrderNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelOrderNo({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_keep_their_prefix() {
        let id = PaymentId::new();
        let s = id.to_string();
        assert!(s.starts_with("pay_"));
        assert_eq!(s.len(), 4 + 32);
        assert_eq!(s.parse::<PaymentId>().unwrap(), id);
    }

    #[test]
    fn ids_refuse_other_prefixes_and_bad_bodies() {
        let re = RefundId::new().to_string();
        assert!(re.parse::<PaymentId>().is_err());
        assert!("pay_xyz".parse::<PaymentId>().is_err());
        assert!("pay_0193a7c2e4f87b1d9c3e5a6b7c8d9e0g".parse::<PaymentId>().is_err());
        assert!("".parse::<PaymentId>().is_err());
    }

    #[test]
    fn ids_are_time_ordered() {
        let a = PaymentId::new();
        let b = PaymentId::new();
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
    }

    #[test]
    fn channel_order_numbers_fit_every_channel() {
        let no = ChannelOrderNo::generate();
        let s = no.as_str();
        assert_eq!(s.len(), 32);
        assert!(s.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()));
        assert!(ChannelOrderNo::generate() > no);
    }
}
