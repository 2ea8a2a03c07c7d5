//! The reader task: reads frames and hands messages to the applier, stamping the
//! provider's liveness as bytes arrive.

use std::sync::Arc;

use tether_protocol::connection::{BoxedRead, MessageReader, WireError};
use tether_protocol::encoded::Received;
use tether_protocol::liveness::Progress;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::reason::Reason;

use super::{Ended, ACK_INTERVAL, INBOUND_ENTRIES};

/// Reads messages and forwards them; the last item is the terminal result.
pub(super) async fn reader_loop(
    mut reader: MessageReader<BoxedRead>,
    tx: mpsc::Sender<Queued>,
    budget: Arc<Semaphore>,
    last_inbound: Arc<Progress>,
    done: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            biased;
            _ = done.cancelled() => return,
            m = reader.recv_received() => m,
        };
        let terminal = !matches!(msg, Ok(Some(_)));
        let weight = match &msg {
            Ok(Some(Received::Batch(ops))) => ops.len().clamp(1, INBOUND_ENTRIES),
            _ => 1,
        };
        // While the applier is behind, the provider is evidently alive: keep the stamp fresh.
        let mut send = std::pin::pin!(async {
            // The semaphore is never closed, so this only fails if it were.
            let permit = budget.clone().acquire_many_owned(weight as u32).await.ok();
            tx.send(Queued { msg, _permit: permit }).await
        });
        loop {
            tokio::select! {
                biased;
                _ = done.cancelled() => return,
                r = &mut send => {
                    if r.is_err() {
                        return;
                    }
                    break;
                }
                _ = tokio::time::sleep(ACK_INTERVAL) => last_inbound.mark(),
            }
        }
        if terminal {
            return;
        }
        // Decoding the next frame can take milliseconds, and the applier this send just
        // woke waits in this worker's LIFO slot, which no other worker steals: yield so
        // it runs now and decoding and applying overlap.
        tokio::task::yield_now().await;
    }
}

/// What the reader hands the applier: a message (entries kept encoded, see
/// [`Received`]), the clean end of the stream, or why reading failed.
pub(super) type Inbound = Result<Option<Received>, WireError>;

/// An [`Inbound`] in the queue, holding its share of [`INBOUND_ENTRIES`] until the
/// applier takes it.
pub(super) struct Queued {
    pub(super) msg: Inbound,
    pub(super) _permit: Option<OwnedSemaphorePermit>,
}

pub(super) fn inbound(queued: Option<Queued>) -> Result<Received, Ended> {
    match queued.map(|q| q.msg) {
        Some(Ok(Some(m))) => Ok(m),
        Some(Ok(None)) | None => {
            Err(Ended::new(Reason::ConnectionLost, "provider closed the connection without goodbye"))
        }
        Some(Err(e)) if e.is_protocol_violation() => Err(Ended::new(Reason::Exception, format!("protocol error: {e}"))),
        Some(Err(e)) => Err(Ended::new(Reason::ConnectionLost, e.to_string())),
    }
}
