//! Escrow and profit sharing: the arithmetic and the checks, with no I/O.
//!
//! A held payment's splits are commission ratios in basis points. When the payment settles, each
//! receiver gets `floor(held * ratio_bps / 10000)` fen of the amount still held (paid minus the
//! refunds made before settlement) and the merchant the remainder, so the parts always add up to
//! the held amount exactly.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{ChannelKind, ReceiverId};

/// Basis points in one whole.
const WHOLE_BPS: u32 = 10_000;

/// One requested split: a receiver and its commission ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitRequest {
    pub receiver: ReceiverId,
    pub ratio_bps: u32,
}

/// Why a settlement request is refused. Nothing is changed by a refused request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettlementError {
    #[error("a held payment needs at least one split")]
    NoSplits,
    #[error("at most {max} splits per payment, got {got}")]
    TooManySplits { max: usize, got: usize },
    #[error("split to {0} has ratio_bps 0; each ratio must be 1 to 10000")]
    ZeroRatio(ReceiverId),
    #[error("receiver {0} appears more than once in splits")]
    DuplicateReceiver(ReceiverId),
    #[error("the splits sum to {total} basis points, above the {channel} cap of {cap}")]
    OverCap { total: u64, cap: u32, channel: ChannelKind },
}

/// At most this many receivers on one payment (WeChat takes at most 50 per split request).
pub const MAX_SPLITS: usize = 50;

/// Checks a payment's requested splits against the channel's ratio cap.
pub fn validate_splits(
    splits: &[SplitRequest],
    channel: ChannelKind,
    cap_bps: u32,
) -> Result<(), SettlementError> {
    if splits.is_empty() {
        return Err(SettlementError::NoSplits);
    }
    if splits.len() > MAX_SPLITS {
        return Err(SettlementError::TooManySplits { max: MAX_SPLITS, got: splits.len() });
    }
    for (i, s) in splits.iter().enumerate() {
        if s.ratio_bps == 0 {
            return Err(SettlementError::ZeroRatio(s.receiver));
        }
        if splits[..i].iter().any(|o| o.receiver == s.receiver) {
            return Err(SettlementError::DuplicateReceiver(s.receiver));
        }
    }
    let total: u64 = splits.iter().map(|s| u64::from(s.ratio_bps)).sum();
    let cap = cap_bps.min(WHOLE_BPS);
    if total > u64::from(cap) {
        return Err(SettlementError::OverCap { total, cap, channel });
    }
    Ok(())
}

/// What is still held on a payment: paid minus what refunds took (or reserved) before settlement.
pub fn held_amount(paid: i64, refunded_or_reserved: i64) -> i64 {
    (paid - refunded_or_reserved).max(0)
}

/// The amounts of a settlement: one per split, in the splits' order, and the merchant's remainder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPlan {
    pub held: i64,
    pub amounts: Vec<i64>,
    pub merchant: i64,
}

/// Splits `held` fen by the ratios: each receiver gets the floor of its share, the merchant the
/// rest. The parts sum to `held` exactly. Ratios are assumed validated ([`validate_splits`]).
pub fn plan_splits(held: i64, splits: &[SplitRequest]) -> SplitPlan {
    let held = held.max(0);
    let amounts: Vec<i64> = splits
        .iter()
        .map(|s| {
            // i128: held (up to i64) times a ratio (up to 10000) does not fit i64 in general.
            let share = i128::from(held) * i128::from(s.ratio_bps.min(WHOLE_BPS)) / 10_000;
            i64::try_from(share).unwrap_or(held)
        })
        .collect();
    let merchant = held - amounts.iter().sum::<i64>();
    SplitPlan { held, amounts, merchant }
}

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
                }
            }
        }
    };
}

text_enum!(
    /// Where a held payment's settlement is.
    SettlementStatus {
        Held => "held",
        Settling => "settling",
        Settled => "settled",
        Failed => "failed",
    }
);

text_enum!(
    /// One receiver's split.
    SplitStatus {
        Pending => "pending",
        Succeeded => "succeeded",
        Failed => "failed",
    }
);

text_enum!(
    /// A movement of money in the ledger. Each entry is signed against one account (`merchant`
    /// or a receiver's id); the entries of a payment sum to zero against its paid amount.
    LedgerKind {
        Paid => "paid",
        Held => "held",
        Refunded => "refunded",
        Split => "split",
        Released => "released",
        Returned => "returned",
        DuplicatePaid => "duplicate_paid",
        DuplicateRefund => "duplicate_refund",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    fn split(ratio_bps: u32) -> SplitRequest {
        SplitRequest { receiver: ReceiverId::new(), ratio_bps }
    }

    #[test]
    fn floor_split_gives_the_remainder_to_the_merchant() {
        let plan = plan_splits(10_000, &[split(1_500), split(333)]);
        assert_eq!(plan.amounts, vec![1_500, 333]);
        assert_eq!(plan.merchant, 10_000 - 1_500 - 333);
        // 1 fen at 33.33 %: the receiver's floor is 0, the merchant keeps it.
        let plan = plan_splits(1, &[split(3_333)]);
        assert_eq!(plan.amounts, vec![0]);
        assert_eq!(plan.merchant, 1);
        // 3 x 33.33 % of 100 fen: 33 each, 1 fen remainder.
        let plan = plan_splits(100, &[split(3_333), split(3_333), split(3_333)]);
        assert_eq!(plan.amounts, vec![33, 33, 33]);
        assert_eq!(plan.merchant, 1);
    }

    #[test]
    fn parts_always_sum_to_held() {
        for held in [0, 1, 7, 99, 100, 12_345, 999_999_999, i64::MAX / 2] {
            for ratios in [[1u32, 9_999], [3_333, 3_333], [10_000, 0], [1_500, 333]] {
                let splits: Vec<_> = ratios.iter().filter(|r| **r > 0).map(|r| split(*r)).collect();
                let plan = plan_splits(held, &splits);
                assert_eq!(plan.amounts.iter().sum::<i64>() + plan.merchant, held);
                assert!(plan.merchant >= 0);
            }
        }
    }

    #[test]
    fn refund_before_settlement_shrinks_the_base() {
        let held = held_amount(10_000, 2_000);
        assert_eq!(held, 8_000);
        let plan = plan_splits(held, &[split(1_500), split(333)]);
        assert_eq!(plan.amounts, vec![1_200, 266]);
        assert_eq!(plan.merchant, 8_000 - 1_200 - 266);
        assert_eq!(held_amount(100, 100), 0);
        assert_eq!(held_amount(100, 150), 0);
    }

    #[test]
    fn ratio_cap_per_channel() {
        let ok = [split(1_500), split(1_500)];
        assert_eq!(validate_splits(&ok, ChannelKind::Wechat, 3_000), Ok(()));
        let over = [split(1_500), split(1_501)];
        assert_eq!(
            validate_splits(&over, ChannelKind::Wechat, 3_000),
            Err(SettlementError::OverCap {
                total: 3_001,
                cap: 3_000,
                channel: ChannelKind::Wechat
            })
        );
        assert!(validate_splits(&over, ChannelKind::Alipay, 3_000).is_err());
        // The channel's cap comes from its adapter (`Channel::max_share_bps`); UnionPay's is the
        // whole (paymux's ledger splits).
        assert_eq!(validate_splits(&over, ChannelKind::Unionpay, WHOLE_BPS), Ok(()));
        // A configured cap above the whole is the whole.
        let all = [split(6_000), split(4_001)];
        assert!(validate_splits(&all, ChannelKind::Unionpay, 20_000).is_err());
    }

    #[test]
    fn bad_split_lists_are_refused() {
        assert_eq!(
            validate_splits(&[], ChannelKind::Wechat, 3_000),
            Err(SettlementError::NoSplits)
        );
        let z = split(0);
        assert_eq!(
            validate_splits(&[z], ChannelKind::Wechat, 3_000),
            Err(SettlementError::ZeroRatio(z.receiver))
        );
        let a = split(100);
        assert_eq!(
            validate_splits(&[a, a], ChannelKind::Wechat, 3_000),
            Err(SettlementError::DuplicateReceiver(a.receiver))
        );
        let many: Vec<_> = (0..51).map(|_| split(1)).collect();
        assert!(matches!(
            validate_splits(&many, ChannelKind::Wechat, 3_000),
            Err(SettlementError::TooManySplits { .. })
        ));
    }

    #[test]
    fn statuses_round_trip() {
        for k in [LedgerKind::Paid, LedgerKind::DuplicateRefund, LedgerKind::Returned] {
            assert_eq!(k.as_str().parse::<LedgerKind>(), Ok(k));
        }
        assert_eq!("settling".parse::<SettlementStatus>(), Ok(SettlementStatus::Settling));
        assert!("nope".parse::<SplitStatus>().is_err());
    }
}
