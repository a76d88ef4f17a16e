//! Settling a held payment at a channel that freezes the funds itself (WeChat profit sharing,
//! Alipay royalty): share calls move each receiver's part, then one release gives the rest to the
//! merchant.
//!
//! Every step is written before the channel is asked to do it, and every call is keyed by a
//! number kept in the store, so a step whose answer was lost (a timeout, a crash between the
//! channel call and the commit) is finished by asking again with the same number: the channel
//! deduplicates on it and no receiver is paid twice.
//!
//! - **Start a round** (`held` or `failed` -> `settling`, one compare-and-set): fix each split's
//!   amount (first round), give the splits still to pay one new share number, choose the release
//!   number once.
//! - **Drive** (`settling`): send (or, after a restart, query then re-send) each share call; each
//!   line the channel reports final becomes `succeeded` (with its ledger entries) or `failed`.
//!   While a line is pending the settlement stays `settling` and the sweeper drives it again.
//! - **Finish**: every split succeeded -> release, then `settled` with the merchant's remainder
//!   released in the ledger and `settlement.succeeded`. Some failed -> `failed` with
//!   `settlement.split_failed` (others succeeded) or `settlement.failed`; nothing more happens
//!   until the merchant settles again, which retries only the failed splits under a new number.

use std::collections::BTreeMap;

use paymux_core::{
    Channel, ChannelError, ChannelOrderNo, EventId, EventType, Money, ReceiverAccount,
    ReleaseRequest, Released, SettlementStatus, ShareLine, ShareLineState, ShareRequest,
    ShareResult, SplitStatus, held_amount,
};
use paymux_store::{
    AttemptRecord, LedgerEntryRecord, NewEvent, PaymentRecord, SettlementChange, SettlementRecord,
    SplitRecord,
};

use crate::engine::{Engine, payment_ref};
use crate::error::EngineError;
use crate::settlement::{
    ReceiverAccounts, plan, receiver_entries, release_entries, settlement_event, strictly_after,
};

/// How soon a settling settlement is looked at again while the channel processes it.
const POLL: time::Duration = time::Duration::seconds(2);

/// Settles `p`, held at `adapter`'s channel: starts a round, or drives the one under way.
pub(crate) async fn settle_at_channel(
    engine: &Engine,
    p: &PaymentRecord,
    s: SettlementRecord,
    adapter: &dyn Channel,
    attempt: &AttemptRecord,
) -> Result<(), EngineError> {
    let (s, fresh) = match s.status {
        SettlementStatus::Settled => return Ok(()),
        SettlementStatus::Settling => (s, false),
        SettlementStatus::Held | SettlementStatus::Failed => {
            match start_round(engine, p, s, adapter).await? {
                Some(s) => (s, true),
                // Another settle (the merchant's, or the sweeper's) started it first and drives it.
                None => return Ok(()),
            }
        }
    };
    drive(engine, p, s, adapter, attempt, fresh).await
}

/// Writes the start of a round: amounts fixed, the splits to pay under a new share number, the
/// release number chosen. `None` if another writer changed the settlement first.
async fn start_round(
    engine: &Engine,
    p: &PaymentRecord,
    s: SettlementRecord,
    adapter: &dyn Channel,
) -> Result<Option<SettlementRecord>, EngineError> {
    let at = strictly_after(s.updated_at);
    let share_no = ChannelOrderNo::generate().to_string();
    let splits: Vec<SplitRecord> = if s.status == SettlementStatus::Held {
        let plan = plan(p, &s);
        s.splits
            .iter()
            .zip(plan.amounts)
            .map(|(x, amount)| SplitRecord {
                amount: Some(amount),
                // Nothing to move (a tiny payment's floor is 0 fen): done without a call.
                status: if amount > 0 { SplitStatus::Pending } else { SplitStatus::Succeeded },
                out_order_no: (amount > 0).then(|| share_no.clone()),
                failure: None,
                ..x.clone()
            })
            .collect()
    } else {
        s.splits
            .iter()
            .map(|x| match x.status {
                SplitStatus::Failed => SplitRecord {
                    status: SplitStatus::Pending,
                    out_order_no: Some(share_no.clone()),
                    failure: None,
                    ..x.clone()
                },
                _ => x.clone(),
            })
            .collect()
    };
    // Each split about to be sent carries its receiver's account from now on, so every later
    // send under its number is the same call. One without an account fails before any send.
    let mut splits = splits;
    for split in &mut splits {
        if split.status != SplitStatus::Pending {
            continue;
        }
        match receiver_account(engine, p, split, adapter).await? {
            Ok(account) => split.account = Some(account),
            Err(why) => {
                split.status = SplitStatus::Failed;
                split.out_order_no = None;
                split.failure = Some(why);
            }
        }
    }
    let release_no = s.release_no.clone().or_else(|| Some(ChannelOrderNo::generate().to_string()));
    let change = SettlementChange {
        payment_id: p.id,
        merchant_id: p.merchant_id,
        from: s.status,
        from_updated_at: s.updated_at,
        to: SettlementStatus::Settling,
        release_no: release_no.clone(),
        expect_refunds: Some((p.amount_reserved, p.amount_refunded)),
        splits: splits.clone(),
        settled_at: None,
        // If this process dies before the round is driven, the sweeper drives it.
        next_check_at: Some(at + POLL),
        entries: Vec::new(),
        events: Vec::new(),
        at,
    };
    if !engine.store.transition_settlement(&change).await? {
        return Ok(None);
    }
    Ok(Some(SettlementRecord {
        status: SettlementStatus::Settling,
        splits,
        release_no,
        updated_at: at,
        ..s
    }))
}

/// One receiver line to send, with the split it pays.
struct Line {
    split: usize,
    account: ReceiverAccount,
}

/// Sends or queries the round's share calls, applies what the channel reports, and finishes the
/// settlement when every split is final. One compare-and-set writes it all.
async fn drive(
    engine: &Engine,
    p: &PaymentRecord,
    s: SettlementRecord,
    adapter: &dyn Channel,
    attempt: &AttemptRecord,
    fresh: bool,
) -> Result<(), EngineError> {
    let mut splits = s.splits.clone();
    let mut entries: Vec<LedgerEntryRecord> = Vec::new();
    let at = strictly_after(s.updated_at);
    let payment = payment_ref(p, attempt);

    // The pending splits, by the share call that carries them.
    let mut calls: BTreeMap<String, Vec<Line>> = BTreeMap::new();
    for (i, split) in s.splits.iter().enumerate() {
        if split.status != SplitStatus::Pending {
            continue;
        }
        let (Some(no), Some(account)) = (split.out_order_no.clone(), split.account.clone()) else {
            return Err(EngineError::Corrupt {
                what: "pending split without its number or account",
            });
        };
        calls.entry(no).or_default().push(Line { split: i, account });
    }

    for (no, lines) in calls {
        let Some(share_no) = ChannelOrderNo::from_channel(&no) else {
            return Err(EngineError::Corrupt { what: "settlement share number" });
        };
        let mut request_lines = Vec::with_capacity(lines.len());
        for l in &lines {
            let amount = splits[l.split].amount.unwrap_or(0);
            let amount = Money::new(amount, p.amount.currency())
                .map_err(|_| EngineError::Corrupt { what: "split amount" })?;
            request_lines.push(ShareLine {
                receiver: l.account.clone(),
                amount,
                // Fixed by the payment alone: a call sent again is the same call.
                description: format!("settlement {}", p.id),
            });
        }
        let req = ShareRequest { payment: payment.clone(), share_no, lines: request_lines };
        let answer = if fresh {
            adapter.share(&req).await
        } else {
            // After a restart or a lost answer: the channel may or may not have the call; a
            // query that does not find it is Unknown, and re-sending the same call is safe.
            match adapter.query_share(&req).await {
                Err(ChannelError::Unknown { .. }) => adapter.share(&req).await,
                other => other,
            }
        };
        crate::failpoint::hit(crate::failpoint::AFTER_CHANNEL_SHARE).await;
        match answer {
            Ok(result) => {
                for l in &lines {
                    let split = &mut splits[l.split];
                    let amount = split.amount.unwrap_or(0);
                    let state = reported_state(&result, &l.account.account, amount);
                    if state.is_none()
                        && result.lines.iter().any(|r| r.account == l.account.account)
                    {
                        // The channel reports another amount than paymux sent for this receiver:
                        // nothing is booked on it, and it is asked again.
                        tracing::error!(payment = %p.id, share = %no, receiver = %split.receiver, amount, "the channel reports another amount for a split; left pending");
                    }
                    match state {
                        Some(ShareLineState::Succeeded) => {
                            split.status = SplitStatus::Succeeded;
                            entries.extend(receiver_entries(
                                p.id,
                                split.receiver,
                                split.amount.unwrap_or(0),
                                at,
                            ));
                        }
                        Some(ShareLineState::Failed { code, message }) => {
                            split.status = SplitStatus::Failed;
                            split.failure = Some(format!("{code}: {message}"));
                        }
                        Some(ShareLineState::Pending) | None => {}
                    }
                }
            }
            Err(e @ (ChannelError::Declined { .. } | ChannelError::Invalid { .. })) if fresh => {
                // The first send of this number was refused: nothing moved for any of its lines.
                tracing::warn!(payment = %p.id, share = %no, error = %e, "share call refused");
                let why = match &e {
                    ChannelError::Declined { code, message } => format!("{code}: {message}"),
                    other => other.to_string(),
                };
                for l in &lines {
                    splits[l.split].status = SplitStatus::Failed;
                    splits[l.split].failure = Some(why.clone());
                }
            }
            Err(e @ (ChannelError::Declined { .. } | ChannelError::Invalid { .. })) => {
                // A refusal of a query or of a call sent again: the first send may have moved
                // the money, so this is not an answer about it. Asked again later; an operator
                // must look if it persists.
                tracing::error!(payment = %p.id, share = %no, error = %e, "share call refused after it was sent; its outcome stays unknown");
            }
            Err(e) => {
                tracing::warn!(payment = %p.id, share = %no, error = %e, "share outcome unknown; asking again later");
            }
        }
    }

    let (to, events, settled_at, next_check_at) = if splits
        .iter()
        .any(|x| x.status == SplitStatus::Pending)
    {
        (SettlementStatus::Settling, Vec::new(), None, Some(at + POLL))
    } else if splits.iter().any(|x| x.status == SplitStatus::Failed) {
        let some_paid =
            splits.iter().any(|x| x.status == SplitStatus::Succeeded && x.amount.unwrap_or(0) > 0);
        let kind =
            if some_paid { EventType::SettlementSplitFailed } else { EventType::SettlementFailed };
        let shown = SettlementRecord {
            status: SettlementStatus::Failed,
            splits: splits.clone(),
            ..s.clone()
        };
        (
            SettlementStatus::Failed,
            vec![settlement_event(engine, p, &shown, kind).await?],
            None,
            None,
        )
    } else {
        match release(p, &s, adapter, &payment).await {
            Released::Done => {
                let paid_out: i64 = splits.iter().map(|x| x.amount.unwrap_or(0)).sum();
                let held = held_amount(p.amount.minor(), p.amount_refunded);
                entries.extend(release_entries(p.id, held - paid_out, at));
                let shown = SettlementRecord {
                    status: SettlementStatus::Settled,
                    splits: splits.clone(),
                    settled_at: Some(at),
                    ..s.clone()
                };
                let event =
                    settlement_event(engine, p, &shown, EventType::SettlementSucceeded).await?;
                (SettlementStatus::Settled, vec![event], Some(at), None)
            }
            Released::Pending => (SettlementStatus::Settling, Vec::new(), None, Some(at + POLL)),
        }
    };
    let change = SettlementChange {
        payment_id: p.id,
        merchant_id: p.merchant_id,
        from: SettlementStatus::Settling,
        from_updated_at: s.updated_at,
        to,
        release_no: None,
        expect_refunds: None,
        splits,
        settled_at,
        next_check_at,
        entries,
        events: events
            .into_iter()
            .map(|(kind, data)| NewEvent {
                id: EventId::new(),
                kind,
                object_id: p.id.to_string(),
                data,
            })
            .collect(),
        at,
    };
    // Lost the race to another driver: it wrote what it saw, and the calls we made were the same
    // idempotent calls, so nothing is lost.
    engine.store.transition_settlement(&change).await?;
    Ok(())
}

/// What the channel says of the line it was sent for `account` of `amount` fen: `None` while it
/// does not report that line, or reports it with another amount (nothing may be booked on it).
fn reported_state<'a>(
    result: &'a ShareResult,
    account: &str,
    amount: i64,
) -> Option<&'a ShareLineState> {
    result
        .lines
        .iter()
        .find(|r| r.account == account)
        .filter(|r| r.amount.minor() == amount)
        .map(|r| &r.state)
}

/// Sends (or re-sends) the release of the rest. Anything but a confirmed release is pending:
/// the release is asked again with the same number.
async fn release(
    p: &PaymentRecord,
    s: &SettlementRecord,
    adapter: &dyn Channel,
    payment: &paymux_core::PaymentRef,
) -> Released {
    let Some(release_no) = s.release_no.as_deref().and_then(ChannelOrderNo::from_channel) else {
        tracing::error!(payment = %p.id, "settling settlement without a release number");
        return Released::Pending;
    };
    let req = ReleaseRequest { payment: payment.clone(), release_no };
    match adapter.release(&req).await {
        Ok(r) => r,
        Err(e @ (ChannelError::Declined { .. } | ChannelError::Invalid { .. })) => {
            // A refused release leaves the rest frozen until the channel's freeze period ends:
            // an operator must look. It is asked again on every check.
            tracing::error!(payment = %p.id, error = %e, "the channel refused to release the rest");
            Released::Pending
        }
        Err(e) => {
            tracing::warn!(payment = %p.id, error = %e, "release outcome unknown; asking again later");
            Released::Pending
        }
    }
}

/// The receiver's account on the channel, or why the split cannot be paid.
async fn receiver_account(
    engine: &Engine,
    p: &PaymentRecord,
    split: &SplitRecord,
    adapter: &dyn Channel,
) -> Result<Result<ReceiverAccount, String>, EngineError> {
    // A receiver deleted since the payment was made is still paid: its split was agreed.
    let Some(r) = engine.store.receiver(p.merchant_id, split.receiver).await? else {
        return Ok(Err("receiver_missing: no such receiver".into()));
    };
    let accounts: ReceiverAccounts = serde_json::from_value(r.accounts.clone())
        .map_err(|_| EngineError::Corrupt { what: "receiver accounts" })?;
    Ok(match accounts.channel_account(adapter.kind(), &r.name) {
        Some(a) => Ok(a),
        None => Err(format!("receiver_without_account: no {} account", adapter.kind())),
    })
}

#[cfg(test)]
mod tests {
    use paymux_core::{Currency, ShareLineResult};

    use super::*;

    fn line(account: &str, fen: i64, state: ShareLineState) -> ShareLineResult {
        ShareLineResult {
            account: account.into(),
            amount: Money::new(fen, Currency::Cny).expect("an amount"),
            state,
        }
    }

    #[test]
    fn a_line_counts_only_for_its_account_and_the_amount_sent() {
        let result = ShareResult {
            channel_share_no: None,
            lines: vec![
                line("1600000001", 1_500, ShareLineState::Succeeded),
                line("1600000002", 300, ShareLineState::Succeeded),
            ],
        };
        assert_eq!(reported_state(&result, "1600000001", 1_500), Some(&ShareLineState::Succeeded));
        // The channel paid 3.00 where 3.33 was sent: not booked, asked again.
        assert_eq!(reported_state(&result, "1600000002", 333), None);
        // A line the channel does not report yet stays pending.
        assert_eq!(reported_state(&result, "1600000003", 100), None);
    }
}
