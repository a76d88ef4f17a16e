//! Reading `royalty_detail_list` back as the lines paymux sent.
//!
//! The engine finds a line's outcome by the receiver's account exactly as it was sent, but
//! Alipay does not always echo it: an `openId` receiver may come back under `trans_in_open_id`
//! with no `trans_in`, and a `loginName` receiver under its user id (2088...). So each detail
//! is matched to a line of the request, and reported under that line's account:
//!
//! 1. by `trans_in`, then by `trans_in_open_id`, equal to a sent account;
//! 2. a detail neither names is matched by amount among the sent lines still unmatched.
//!
//! Why the amount fallback is safe: settle.query answers for one settle (one
//! `out_request_no`), so every transfer detail is a line of that call; one call never names two
//! lines with the same receiver, and the engine refuses two receivers with one account, so the
//! first step never confuses two lines. What is left over after it are lines Alipay reported
//! under another id. Equal amounts among them are only a problem when their states differ (who
//! got the money?): then nothing is guessed, and those lines stay absent, which the engine
//! treats as pending. A wrong guess could report a paid line failed, and the engine would pay
//! it again.

use paymux_core::{Money, ShareLine, ShareLineResult, ShareLineState};
use serde::Deserialize;

use crate::protocol;

/// One line of `royalty_detail_list` (settle.query).
#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct RoyaltyDetail {
    #[serde(default)]
    pub(super) operation_type: Option<String>,
    #[serde(default)]
    pub(super) trans_in: Option<String>,
    #[serde(default)]
    pub(super) trans_in_open_id: Option<String>,
    #[serde(default)]
    pub(super) amount: Option<String>,
    #[serde(default)]
    pub(super) state: Option<String>,
    #[serde(default)]
    pub(super) error_code: Option<String>,
    #[serde(default)]
    pub(super) error_desc: Option<String>,
}

impl RoyaltyDetail {
    /// Only `transfer` lines (or lines without a type) are a split's own; the others are
    /// reversals and top-ups.
    fn is_transfer(&self) -> bool {
        self.operation_type.as_deref().is_none_or(|t| t == "transfer")
    }

    /// The ids this detail names its receiver by, non-empty ones only.
    fn ids(&self) -> impl Iterator<Item = &str> {
        [self.trans_in.as_deref(), self.trans_in_open_id.as_deref()]
            .into_iter()
            .flatten()
            .filter(|id| !id.is_empty())
    }

    /// A name for the detail in messages.
    fn label(&self) -> &str {
        self.ids().next().unwrap_or("a line without trans_in")
    }
}

/// A transfer detail's amount and state. A state this adapter does not know is pending, never
/// failed.
fn read(d: &RoyaltyDetail) -> Result<(Money, ShareLineState), String> {
    let amount = protocol::yuan_to_money(d.amount.as_deref().unwrap_or_default())
        .map_err(|e| format!("line for {}: {e}", d.label()))?;
    let state = match d.state.as_deref() {
        Some("SUCCESS") => ShareLineState::Succeeded,
        Some("FAIL") => ShareLineState::Failed {
            code: d.error_code.clone().filter(|c| !c.is_empty()).unwrap_or_else(|| "FAIL".into()),
            message: d.error_desc.clone().unwrap_or_default(),
        },
        Some("PROCESSING") => ShareLineState::Pending,
        other => {
            tracing::warn!(state = ?other, "alipay settle line in an unknown state: pending");
            ShareLineState::Pending
        }
    };
    Ok((amount, state))
}

/// The settle's transfer details as the lines `sent` named, in the order they were sent. A
/// sent line no detail can be tied to with certainty is left out. An amount that does not
/// parse is an error: the answer cannot be read.
pub(super) fn as_sent(
    sent: &[ShareLine],
    details: &[RoyaltyDetail],
) -> Result<Vec<ShareLineResult>, String> {
    let mut read_details = Vec::new();
    for d in details.iter().filter(|d| d.is_transfer()) {
        let (amount, state) = read(d)?;
        read_details.push((d, amount, state));
    }
    // What each sent line was matched to; `Err(())` once two details claim it and disagree.
    let mut found: Vec<Option<Result<(Money, ShareLineState), ()>>> = vec![None; sent.len()];
    let mut by_amount = Vec::new();
    for (d, amount, state) in read_details {
        let named = sent.iter().position(|l| d.ids().any(|id| id == l.receiver.account));
        let Some(at) = named else {
            by_amount.push((d, amount, state));
            continue;
        };
        found[at] = match found[at].take() {
            None => Some(Ok((amount, state))),
            Some(Ok(first)) if first == (amount, state.clone()) => Some(Ok(first)),
            Some(_) => {
                tracing::warn!(
                    receiver = d.label(),
                    "alipay settle query: two different lines for one receiver; left pending"
                );
                Some(Err(()))
            }
        };
    }
    match_by_amount(sent, &mut found, by_amount);
    Ok(sent
        .iter()
        .zip(found)
        .filter_map(|(line, found)| {
            let (amount, state) = found?.ok()?;
            Some(ShareLineResult { account: line.receiver.account.clone(), amount, state })
        })
        .collect())
}

/// Ties the details no account named to the sent lines still unmatched, amount by amount: only
/// when as many lines as details have that amount and the details agree on the state.
fn match_by_amount(
    sent: &[ShareLine],
    found: &mut [Option<Result<(Money, ShareLineState), ()>>],
    mut left: Vec<(&RoyaltyDetail, Money, ShareLineState)>,
) {
    while let Some((d, amount, state)) = left.pop() {
        let same: Vec<ShareLineState> = std::iter::once(state)
            .chain(extract_if(&mut left, |(_, a, _)| *a == amount).map(|(_, _, s)| s))
            .collect();
        let open: Vec<usize> =
            (0..sent.len()).filter(|&i| found[i].is_none() && sent[i].amount == amount).collect();
        let agreed = same.windows(2).all(|w| w[0] == w[1]);
        if open.len() == same.len() && agreed {
            for i in open {
                found[i] = Some(Ok((amount, same[0].clone())));
            }
        } else {
            tracing::warn!(
                receiver = d.label(),
                %amount,
                details = same.len(),
                lines = open.len(),
                "alipay settle query: a line cannot be tied to a receiver; left pending"
            );
        }
    }
}

/// Removes and returns the items `pick` selects, keeping the order of the rest.
fn extract_if<T>(items: &mut Vec<T>, pick: impl Fn(&T) -> bool) -> impl Iterator<Item = T> {
    let (picked, kept) = std::mem::take(items).into_iter().partition::<Vec<T>, _>(pick);
    *items = kept;
    picked.into_iter()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use paymux_core::{Currency, ReceiverAccount};

    use super::*;

    fn cny(fen: i64) -> Money {
        Money::new(fen, Currency::Cny).unwrap()
    }

    fn sent(kind: &str, account: &str, fen: i64) -> ShareLine {
        ShareLine {
            receiver: ReceiverAccount {
                kind: kind.into(),
                account: account.into(),
                name: None,
                relation_type: None,
            },
            amount: cny(fen),
            description: "平台服务费".into(),
        }
    }

    fn detail(
        trans_in: Option<&str>,
        open_id: Option<&str>,
        yuan: &str,
        state: &str,
    ) -> RoyaltyDetail {
        RoyaltyDetail {
            operation_type: Some("transfer".into()),
            trans_in: trans_in.map(str::to_owned),
            trans_in_open_id: open_id.map(str::to_owned),
            amount: Some(yuan.into()),
            state: Some(state.into()),
            error_code: (state == "FAIL").then(|| "TXN_RESULT_ACCOUNT_BALANCE_NOT_ENOUGH".into()),
            error_desc: (state == "FAIL").then(|| "分账余额不足".into()),
        }
    }

    fn result(account: &str, fen: i64, state: ShareLineState) -> ShareLineResult {
        ShareLineResult { account: account.into(), amount: cny(fen), state }
    }

    const USER: &str = "2088000000000101";
    const OPEN_ID: &str = "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5";
    const LOGIN: &str = "shop@example.com";
    const LOGIN_USER: &str = "2088000000000777";

    #[test]
    fn states_map_to_line_states_and_unknown_ones_are_pending() {
        let lines = [sent("userId", USER, 330)];
        let one = |state: &str| as_sent(&lines, &[detail(Some(USER), None, "3.3", state)]).unwrap();
        assert_eq!(one("SUCCESS"), vec![result(USER, 330, ShareLineState::Succeeded)]);
        assert_eq!(
            one("FAIL"),
            vec![result(
                USER,
                330,
                ShareLineState::Failed {
                    code: "TXN_RESULT_ACCOUNT_BALANCE_NOT_ENOUGH".into(),
                    message: "分账余额不足".into()
                }
            )]
        );
        assert_eq!(one("PROCESSING"), vec![result(USER, 330, ShareLineState::Pending)]);
        assert_eq!(one("WHATEVER"), vec![result(USER, 330, ShareLineState::Pending)]);
    }

    #[test]
    fn a_line_is_found_by_trans_in() {
        let lines = [sent("userId", USER, 100), sent("userId", "2088000000000102", 200)];
        let details = [
            detail(Some("2088000000000102"), None, "2.00", "FAIL"),
            detail(Some(USER), None, "1.00", "SUCCESS"),
        ];
        let got = as_sent(&lines, &details).unwrap();
        // In the order sent, whatever the answer's order.
        assert_eq!(got[0], result(USER, 100, ShareLineState::Succeeded));
        assert_eq!(got[1].account, "2088000000000102");
        assert!(matches!(got[1].state, ShareLineState::Failed { .. }));
    }

    #[test]
    fn an_open_id_receiver_is_found_by_trans_in_open_id_without_trans_in() {
        let lines = [sent("userId", USER, 100), sent("openId", OPEN_ID, 100)];
        let details = [
            detail(None, Some(OPEN_ID), "1.00", "SUCCESS"),
            detail(Some(USER), None, "1.00", "PROCESSING"),
        ];
        assert_eq!(
            as_sent(&lines, &details).unwrap(),
            vec![
                result(USER, 100, ShareLineState::Pending),
                result(OPEN_ID, 100, ShareLineState::Succeeded)
            ]
        );
        // With an empty trans_in, or a user id beside the open id, it is the same line.
        let details = [detail(Some(""), Some(OPEN_ID), "1.00", "SUCCESS")];
        assert_eq!(as_sent(&lines[1..], &details).unwrap()[0].account, OPEN_ID);
        let details = [detail(Some(LOGIN_USER), Some(OPEN_ID), "1.00", "SUCCESS")];
        assert_eq!(as_sent(&lines[1..], &details).unwrap()[0].account, OPEN_ID);
    }

    #[test]
    fn a_login_name_receiver_reported_by_its_user_id_is_found_by_amount() {
        let lines = [sent("userId", USER, 100), sent("loginName", LOGIN, 250)];
        let details = [
            detail(Some(USER), None, "1.00", "SUCCESS"),
            detail(Some(LOGIN_USER), None, "2.5", "SUCCESS"),
        ];
        assert_eq!(
            as_sent(&lines, &details).unwrap(),
            vec![
                result(USER, 100, ShareLineState::Succeeded),
                result(LOGIN, 250, ShareLineState::Succeeded)
            ]
        );
        // Even when its amount equals a line already found by account.
        let lines = [sent("userId", USER, 100), sent("loginName", LOGIN, 100)];
        let details = [
            detail(Some(LOGIN_USER), None, "1.00", "PROCESSING"),
            detail(Some(USER), None, "1.00", "SUCCESS"),
        ];
        assert_eq!(
            as_sent(&lines, &details).unwrap(),
            vec![
                result(USER, 100, ShareLineState::Succeeded),
                result(LOGIN, 100, ShareLineState::Pending)
            ]
        );
    }

    #[test]
    fn equal_amounts_are_matched_only_when_the_states_agree() {
        let lines = [sent("loginName", LOGIN, 100), sent("openId", OPEN_ID, 100)];
        let agree = [
            detail(Some(LOGIN_USER), None, "1.00", "SUCCESS"),
            detail(None, None, "1.00", "SUCCESS"),
        ];
        assert_eq!(
            as_sent(&lines, &agree).unwrap(),
            vec![
                result(LOGIN, 100, ShareLineState::Succeeded),
                result(OPEN_ID, 100, ShareLineState::Succeeded)
            ]
        );
        // Who got the money and who did not cannot be told: both stay pending.
        let differ =
            [detail(Some(LOGIN_USER), None, "1.00", "SUCCESS"), detail(None, None, "1.00", "FAIL")];
        assert_eq!(as_sent(&lines, &differ).unwrap(), vec![]);
        // One detail for two lines of that amount: which one it is cannot be told either.
        assert_eq!(as_sent(&lines, &differ[..1]).unwrap(), vec![]);
        // Other amounts are still matched.
        let lines = [lines[0].clone(), lines[1].clone(), sent("loginName", "b@example.com", 700)];
        let details = [differ[0].clone(), differ[1].clone(), detail(None, None, "7", "SUCCESS")];
        assert_eq!(
            as_sent(&lines, &details).unwrap(),
            vec![result("b@example.com", 700, ShareLineState::Succeeded)]
        );
    }

    #[test]
    fn sent_lines_missing_from_the_answer_are_absent() {
        let lines = [sent("userId", USER, 100), sent("openId", OPEN_ID, 200)];
        assert_eq!(as_sent(&lines, &[]).unwrap(), vec![]);
        let details = [detail(Some(USER), None, "1.00", "SUCCESS")];
        assert_eq!(
            as_sent(&lines, &details).unwrap(),
            vec![result(USER, 100, ShareLineState::Succeeded)]
        );
        // A detail that fits no sent line is not reported.
        let details = [detail(Some(LOGIN_USER), None, "9.99", "SUCCESS")];
        assert_eq!(as_sent(&lines, &details).unwrap(), vec![]);
    }

    #[test]
    fn two_differing_details_for_one_receiver_leave_it_pending() {
        let lines = [sent("userId", USER, 100)];
        let same =
            [detail(Some(USER), None, "1.00", "SUCCESS"), detail(Some(USER), None, "1", "SUCCESS")];
        assert_eq!(as_sent(&lines, &same).unwrap().len(), 1);
        let differ =
            [detail(Some(USER), None, "1.00", "SUCCESS"), detail(Some(USER), None, "1.00", "FAIL")];
        assert_eq!(as_sent(&lines, &differ).unwrap(), vec![]);
        // A named detail never stands in for another receiver by amount.
        let lines = [sent("userId", USER, 100), sent("loginName", LOGIN, 100)];
        assert_eq!(as_sent(&lines, &same).unwrap().len(), 1);
    }

    #[test]
    fn reversals_and_top_ups_are_not_lines_and_a_bad_amount_is_an_error() {
        let lines = [sent("userId", USER, 100)];
        let reversal = RoyaltyDetail {
            operation_type: Some("transfer_refund".into()),
            ..detail(Some(USER), None, "1.00", "SUCCESS")
        };
        assert_eq!(as_sent(&lines, &[reversal]).unwrap(), vec![]);
        let untyped =
            RoyaltyDetail { operation_type: None, ..detail(Some(USER), None, "1.00", "SUCCESS") };
        assert_eq!(as_sent(&lines, &[untyped]).unwrap().len(), 1);
        let bad = detail(None, Some(OPEN_ID), "abc", "SUCCESS");
        let e = as_sent(&lines, &[bad]).unwrap_err();
        assert!(e.contains(OPEN_ID), "{e}");
    }
}
