//! A crash-test hook: `PAYMUX_FAILPOINT=<name>` makes the gateway stop dead at the named point
//! (it hangs until the process is killed), so tests can kill it between a channel call and the
//! commit that records it. Unset in normal operation, where each check is one environment read.

/// After the channel answered a create, before the answer is stored.
pub const AFTER_CHANNEL_CREATE: &str = "after_channel_create";
/// After a create's answer was stored (with its idempotency key's answer), before it is returned.
pub const AFTER_CREATE_RECORDED: &str = "after_create_recorded";
/// After a duplicate payment was recorded with its refund, before the refund is sent.
pub const BEFORE_DUPLICATE_REFUND: &str = "before_duplicate_refund";
/// After the channel answered a share call (profit sharing), before the answer is stored.
pub const AFTER_CHANNEL_SHARE: &str = "after_channel_share";
/// After the channel answered a refund, before the answer is stored.
pub const AFTER_CHANNEL_REFUND: &str = "after_channel_refund";

pub async fn hit(name: &str) {
    if std::env::var("PAYMUX_FAILPOINT").is_ok_and(|v| v == name) {
        tracing::error!(failpoint = name, "failpoint reached: hanging until killed");
        std::future::pending::<()>().await;
    }
}
