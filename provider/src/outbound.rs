//! What a session hands its writer task: a message to encode, or one already encoded
//! from stored entries ([`tether_protocol::encoded`]), which is how refresh batches and
//! live changes go out without decoding and re-encoding every entry.

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
