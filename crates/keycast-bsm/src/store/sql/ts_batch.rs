//! Group commit of LTKM TS reservations ([`super::BsmStore::reserve_ltkm_ts`]): the answers of
//! concurrent requests each need a durable TS before their LTKMs leave, and one commit (one
//! fsync) per request serialises them all. Reservations queue to a task of the store that serves
//! everything queued meanwhile (up to [`MAX_BATCH`]) in one transaction; each caller gets its
//! answer only after that transaction commits, so the durability promise is the one of a single
//! reservation. A batch that fails as a whole is retried one reservation at a time, so one
//! refused reservation (a full counter, an unknown terminal) refuses only its own caller.

use tokio::sync::{mpsc, oneshot};

use crate::store::StoreError;

/// Most reservations in one transaction \[chosen\].
pub(super) const MAX_BATCH: usize = 256;

/// One queued reservation.
pub(super) struct Reservation {
    pub terminal: String,
    pub smk: String,
    pub n: u32,
    pub answer: oneshot::Sender<Result<u32, StoreError>>,
}

/// The queue's sending side, held by the store (its clones share it).
#[derive(Debug, Clone)]
pub(super) struct TsQueue {
    tx: mpsc::UnboundedSender<Reservation>,
}

impl TsQueue {
    pub(super) fn new() -> (Self, mpsc::UnboundedReceiver<Reservation>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    /// Queues a reservation and waits for its committed answer.
    pub(super) async fn reserve(&self, terminal: &str, smk: &str, n: u32) -> Result<u32, StoreError> {
        let (answer, rx) = oneshot::channel();
        let r = Reservation { terminal: terminal.to_owned(), smk: smk.to_owned(), n, answer };
        self.tx.send(r).map_err(|_| StoreError::Backend("the TS reservation task has ended".into()))?;
        rx.await.map_err(|_| StoreError::Backend("the TS reservation task ended before answering".into()))?
    }
}

/// Takes what is queued after `first`, up to [`MAX_BATCH`] in all.
pub(super) fn drain(first: Reservation, rx: &mut mpsc::UnboundedReceiver<Reservation>) -> Vec<Reservation> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
    batch
}
