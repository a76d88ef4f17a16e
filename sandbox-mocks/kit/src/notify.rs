//! The notification scheduler: each notification is sent until its receiver acknowledges it,
//! waiting the configured intervals between sends, then given up; with the reorder fault a new
//! notification is held back until the next one overtakes it.
//!
//! A mock says how one send is made and what an acknowledgement is ([`Notification`]); the
//! scheduler owns the timing.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::sync::lock;

/// How long the reorder fault holds a notification back waiting for a successor to overtake it;
/// after that it goes out anyway, so a lone notification is late but never lost.
pub const REORDER_HOLD_TIMEOUT: Duration = Duration::from_secs(1);

/// One notification, as its mock sends it.
pub trait Notification: Send + Sync + 'static {
    /// Makes send number `attempt` (from 1) and says whether the receiver acknowledged it.
    fn send(&self, attempt: usize) -> impl Future<Output = bool> + Send;
    /// Called once: after the acknowledged send, or after the last one went unacknowledged.
    fn finished(&self, acknowledged: bool);
    /// What the log calls this notification.
    fn label(&self) -> String;
}

/// Delivers notifications on one retry schedule. Cheap to clone: clones share the schedule and
/// the reorder state.
#[derive(Debug)]
pub struct Scheduler<N> {
    inner: Arc<Inner<N>>,
}

impl<N> Clone for Scheduler<N> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

#[derive(Debug)]
struct Inner<N> {
    delays: Vec<Duration>,
    reorder: Mutex<Reorder<N>>,
}

/// At most one held notification, tagged with a ticket so that its hold timer releases only that
/// one and never a later notification held in its place.
#[derive(Debug)]
struct Reorder<N> {
    next_ticket: u64,
    held: Option<(u64, Ready<N>)>,
}

#[derive(Debug)]
struct Ready<N> {
    notification: Arc<N>,
    copies: usize,
}

impl<N: Notification> Scheduler<N> {
    /// `delays` are the intervals between sends: one send more than there are intervals, then
    /// the scheduler gives up.
    pub fn new(delays: Vec<Duration>) -> Self {
        Self {
            inner: Arc::new(Inner {
                delays,
                reorder: Mutex::new(Reorder { next_ticket: 0, held: None }),
            }),
        }
    }

    /// Starts delivering `copies` independent copies of `notification` in the background. With
    /// `reorder` (the fault) it is held back; a held one is overtaken by the next dispatched,
    /// whether or not the fault is still on: it was held precisely to wait for this. The held
    /// one goes once every copy of the newer one has finished its first send.
    pub fn dispatch(&self, notification: N, copies: usize, reorder: bool) {
        let ready = Ready { notification: Arc::new(notification), copies };
        let mut state = lock(&self.inner.reorder);
        if let Some((_, earlier)) = state.held.take() {
            drop(state);
            let newer_sent = self.start(ready);
            let this = self.clone();
            tokio::spawn(async move {
                for first_send in newer_sent {
                    // An error only means that delivery task ended early; the held one goes anyway.
                    let _ = first_send.await;
                }
                this.start(earlier);
            });
        } else if reorder {
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.held = Some((ticket, ready));
            drop(state);
            tokio::spawn(self.clone().release_after_hold(ticket));
        } else {
            drop(state);
            self.start(ready);
        }
    }

    /// Sends the notification held under `ticket` if no successor has overtaken it meanwhile.
    async fn release_after_hold(self, ticket: u64) {
        tokio::time::sleep(REORDER_HOLD_TIMEOUT).await;
        let ready = {
            let mut state = lock(&self.inner.reorder);
            match state.held.take_if(|(held, _)| *held == ticket) {
                Some((_, ready)) => ready,
                None => return,
            }
        };
        tracing::info!(notification = %ready.notification.label(), "held notification released unovertaken");
        self.start(ready);
    }

    /// Starts every copy; each receiver fires once that copy's first send has finished
    /// (answered, refused or failed).
    fn start(&self, ready: Ready<N>) -> Vec<oneshot::Receiver<()>> {
        (0..ready.copies)
            .map(|_| {
                let (first_send, finished) = oneshot::channel();
                tokio::spawn(deliver(
                    self.inner.delays.clone(),
                    ready.notification.clone(),
                    first_send,
                ));
                finished
            })
            .collect()
    }
}

async fn deliver<N: Notification>(
    delays: Vec<Duration>,
    notification: Arc<N>,
    first_send: oneshot::Sender<()>,
) {
    let mut first_send = Some(first_send);
    for attempt in 1..=delays.len() + 1 {
        if let Some(delay) = (attempt - 1).checked_sub(1).and_then(|i| delays.get(i)) {
            tokio::time::sleep(*delay).await;
        }
        let acknowledged = notification.send(attempt).await;
        if let Some(done) = first_send.take() {
            // Nobody waiting (no notification was held behind this one) is fine.
            let _ = done.send(());
        }
        if acknowledged {
            notification.finished(true);
            return;
        }
    }
    tracing::info!(notification = %notification.label(), "notification never acknowledged; giving up");
    notification.finished(false);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant;

    use tokio::sync::mpsc;

    use super::*;

    /// Records each send as (name, attempt); acknowledges from send `ack_from` on.
    struct Probe {
        name: &'static str,
        ack_from: usize,
        sends: mpsc::UnboundedSender<(&'static str, usize)>,
        outcome: Arc<Mutex<Option<bool>>>,
    }

    impl Notification for Probe {
        async fn send(&self, attempt: usize) -> bool {
            let _ = self.sends.send((self.name, attempt));
            attempt >= self.ack_from
        }

        fn finished(&self, acknowledged: bool) {
            *self.outcome.lock().unwrap() = Some(acknowledged);
        }

        fn label(&self) -> String {
            self.name.to_owned()
        }
    }

    fn probe(
        name: &'static str,
        ack_from: usize,
        sends: &mpsc::UnboundedSender<(&'static str, usize)>,
    ) -> (Probe, Arc<Mutex<Option<bool>>>) {
        let outcome = Arc::new(Mutex::new(None));
        (Probe { name, ack_from, sends: sends.clone(), outcome: outcome.clone() }, outcome)
    }

    async fn wait_for(outcome: &Mutex<Option<bool>>) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(done) = *outcome.lock().unwrap() {
                return done;
            }
            assert!(Instant::now() < deadline, "the notification never finished");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_notification_is_resent_until_acknowledged() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let scheduler = Scheduler::new(vec![Duration::from_millis(5); 4]);
        let (n, outcome) = probe("n", 3, &tx);
        scheduler.dispatch(n, 1, false);
        assert!(wait_for(&outcome).await);
        let sends: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(sends, vec![("n", 1), ("n", 2), ("n", 3)]);
    }

    #[tokio::test]
    async fn a_notification_never_acknowledged_is_given_up_after_one_send_per_interval_plus_one() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let scheduler = Scheduler::new(vec![Duration::from_millis(5); 2]);
        let (n, outcome) = probe("n", usize::MAX, &tx);
        scheduler.dispatch(n, 1, false);
        assert!(!wait_for(&outcome).await);
        assert_eq!(std::iter::from_fn(|| rx.try_recv().ok()).count(), 3);
    }

    #[tokio::test]
    async fn with_reorder_the_next_notification_overtakes_the_held_one() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let scheduler = Scheduler::new(vec![]);
        let (first, first_done) = probe("first", 1, &tx);
        let (second, second_done) = probe("second", 1, &tx);
        scheduler.dispatch(first, 1, true);
        scheduler.dispatch(second, 1, true);
        assert!(wait_for(&first_done).await && wait_for(&second_done).await);
        let order: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).map(|(n, _)| n).collect();
        assert_eq!(order, vec!["second", "first"]);
    }

    #[tokio::test]
    async fn a_held_notification_with_no_successor_goes_out_anyway() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let scheduler = Scheduler::new(vec![]);
        let (lone, done) = probe("lone", 1, &tx);
        scheduler.dispatch(lone, 1, true);
        assert!(wait_for(&done).await);
    }

    #[tokio::test]
    async fn each_copy_is_delivered_on_its_own() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let scheduler = Scheduler::new(vec![]);
        let (n, done) = probe("n", 1, &tx);
        scheduler.dispatch(n, 2, false);
        assert!(wait_for(&done).await);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = 0;
        while seen < 2 {
            assert!(Instant::now() < deadline, "the second copy never went out");
            if rx.try_recv().is_ok() {
                seen += 1;
            } else {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
