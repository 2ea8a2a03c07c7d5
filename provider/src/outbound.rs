//! What a session hands its writer task: a message to encode, or one already encoded
//! from stored entries ([`tether_protocol::encoded`]), which is how refresh batches and
//! live changes go out without decoding and re-encoding every entry.
//!
//! It also holds the one limit on the entries of a batch message ([`BATCH_BYTES`]) and
//! the split under it ([`runs_within`]), which a refresh's batches and a write client's
//! search answers share.

use tether_protocol::connection::{MessageWriter, WireError};
use tether_protocol::encoded::EncodedMessage;
use tether_protocol::message::Message;
use tokio::io::AsyncWrite;

/// One message for the writer.
// A queue slot is as large as a `Message`, as it was when the queue held messages
// only; boxing it would add an allocation to every ping and ack instead.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Outbound {
    /// Encoded as it is sent.
    Message(Message),
    /// Already encoded.
    Encoded(EncodedMessage),
}

impl From<Message> for Outbound {
    fn from(msg: Message) -> Self {
        Outbound::Message(msg)
    }
}

impl From<EncodedMessage> for Outbound {
    fn from(msg: EncodedMessage) -> Self {
        Outbound::Encoded(msg)
    }
}

impl Outbound {
    /// The message's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Outbound::Message(m) => m.name(),
            Outbound::Encoded(m) => m.name(),
        }
    }

    /// Sends it, flushed.
    pub async fn send<W: AsyncWrite + Unpin>(&self, writer: &mut MessageWriter<W>) -> Result<(), WireError> {
        match self {
            Outbound::Message(m) => writer.send(m).await,
            Outbound::Encoded(m) => writer.send_encoded(m).await,
        }
    }

    /// Writes it without flushing ([`MessageWriter::feed`]).
    pub async fn feed<W: AsyncWrite + Unpin>(&self, writer: &mut MessageWriter<W>) -> Result<(), WireError> {
        match self {
            Outbound::Message(m) => writer.feed(m).await,
            Outbound::Encoded(m) => writer.feed_encoded(m).await,
        }
    }

    /// The message it is, decoding an encoded one (for tests and checks).
    pub fn into_message(self) -> Result<Message, tether_protocol::CodecError> {
        match self {
            Outbound::Message(m) => Ok(m),
            Outbound::Encoded(m) => m.decode(),
        }
    }
}

/// Most bytes of entries in one batch message (a refresh's `Batch`, a write client's
/// `SearchEntries`): a quarter of the frame every consumer and write client reads
/// ([`tether_protocol::frame::MAX_FRAME`], 16 MiB), so that the four batches a refresh
/// keeps queued for its writer hold one frame's worth at most. Entries go together only
/// within it; one larger goes alone, and fits a frame, as every entry does
/// ([`tether_protocol::entry::MAX_ENTRY`]). Counted in entries alone, a page of entries
/// each near that size was far past a frame, and could not be sent at all.
pub const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Splits items of `sizes` bytes, in order, into runs of at most `budget` bytes (an item
/// over it goes alone); the runs' lengths, none zero.
pub fn runs_within(sizes: impl IntoIterator<Item = usize>, budget: usize) -> Vec<usize> {
    let mut runs: Vec<usize> = Vec::new();
    let mut bytes = 0usize;
    for size in sizes {
        match runs.last_mut() {
            Some(len) if bytes.saturating_add(size) <= budget => {
                bytes += size;
                *len += 1;
            }
            _ => {
                bytes = size;
                runs.push(1);
            }
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::runs_within;

    #[test]
    fn items_go_in_runs_within_the_budget_and_a_large_one_alone() {
        assert_eq!(runs_within([3, 3, 3, 10, 1, 1], 6), [2, 1, 1, 2]);
        assert_eq!(runs_within([7, 1], 6), [1, 1]);
        assert_eq!(runs_within([usize::MAX, 1], 6), [1, 1]);
        assert!(runs_within([], 6).is_empty());
    }
}
