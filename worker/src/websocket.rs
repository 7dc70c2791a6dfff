//! The client role of RFC 6455 framing (sections 5 and 7) over any byte
//! stream, ours rather than tungstenite's because a worker holds these by
//! the hundred thousand: an idle connection owns no buffer (a read lands in
//! a chunk on the stack; only bytes not yet parsed are kept on the heap),
//! each message is framed and masked straight into one reusable write
//! buffer, and nothing else is allocated per connection. Sessions keep
//! tungstenite's `Message`, `CloseFrame` and `Error` types, so the code
//! around a connection reads the same whichever codec runs under it.
//!
//! Everything a server sends is checked before anything is allocated for
//! it: masked frames, reserved bits, unknown opcodes, fragmented or
//! oversized control frames, continuations out of place, frames and
//! messages over the configured limits, invalid UTF-8 in text and close
//! reasons, close codes a peer may not send. Any of them fails the
//! connection: a close frame naming why (1002, 1007 or 1009) is sent when
//! the socket takes it, and the error is returned.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use ring::rand::SecureRandom;
use tokio::io::{AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error, Message, Utf8Bytes};

use crate::handshake::Transport;

/// Bytes read from the socket at a time into the stack chunk.
const CHUNK: usize = 4096;
/// A buffer grown past this (a large message) is given back once empty.
const KEEP: usize = 64 * 1024;
/// Replies (pongs) queued while the server does not read are dropped past
/// this: a ping flood cannot grow the write buffer (RFC 6455 5.5.3 lets a
/// client answer only the latest ping).
const MAX_QUEUED_REPLIES: usize = 16 * 1024;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Where the closing handshake (RFC 6455 7.1) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    /// We sent a close frame and wait for the server's.
    CloseSent,
    /// Close frames went both ways: only the server's end of TCP is left.
    Closed,
    /// The stream ended or failed: nothing more comes.
    Done,
}

/// A WebSocket connection, client side.
pub struct WebSocket<T> {
    io: T,
    /// Bytes read and not parsed yet: a partial frame, or frames after the
    /// one last returned. Empty (and unallocated) on an idle connection.
    rbuf: Vec<u8>,
    codec: Codec,
}

/// Everything but the socket and the read buffer, so a frame borrowed from
/// the read buffer can be handled in place.
struct Codec {
    /// Frames waiting to be written, from `written` on.
    wbuf: Vec<u8>,
    written: usize,
    /// Something was queued and the transport has not flushed it yet.
    unflushed: bool,
    state: State,
    /// A fragmented message being put together: its opcode and bytes
    /// (boxed: rare, and every idle connection would carry its room).
    partial: Option<Box<(u8, Vec<u8>)>>,
    /// Limits, bytes (16 MiB at most in a run; more reads as 4 GiB).
    max_frame: u32,
    max_message: u32,
}

/// A frame header: what it says and how long it is.
struct Head {
    fin: bool,
    opcode: u8,
    header: usize,
    len: usize,
}

impl<T> WebSocket<T> {
    /// A connection whose opening handshake is done; `leftover` holds the
    /// bytes read past the handshake's answer.
    pub fn new(io: T, leftover: Vec<u8>, config: &WebSocketConfig) -> WebSocket<T> {
        let limit = |l: Option<usize>| l.map_or(u32::MAX, |l| u32::try_from(l).unwrap_or(u32::MAX));
        WebSocket {
            io,
            rbuf: leftover,
            codec: Codec {
                wbuf: Vec::new(),
                written: 0,
                unflushed: false,
                state: State::Open,
                partial: None,
                max_frame: limit(config.max_frame_size),
                max_message: limit(config.max_message_size),
            },
        }
    }

    /// Bytes framed and not yet written.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.codec.unwritten()
    }

    /// Whether something queued is not yet written and flushed: a session
    /// queues its next message only once this is false.
    pub fn busy(&self) -> bool {
        self.codec.unwritten() > 0 || self.codec.unflushed
    }

    /// Drops the queued frames if none of their bytes went out yet (a send
    /// cut short by closing; a frame begun must be finished).
    pub fn discard_unsent(&mut self) {
        if self.codec.written == 0 {
            self.codec.wbuf.clear();
        }
    }
}

impl<T: Transport> WebSocket<T> {
    /// Queues `msg`; it goes out as the stream is read or flushed.
    pub fn queue(&mut self, msg: Message) -> Result<(), Error> {
        Pin::new(self).start_send(msg)
    }

    /// Sends a close frame (once) and flushes it; the server's answer is
    /// read from the stream as usual.
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        if self.codec.state == State::Open {
            self.codec.close_frame(frame.as_ref());
            self.codec.state = State::CloseSent;
        }
        std::future::poll_fn(|cx| self.poll_flush_all(cx)).await
    }

    /// Writes out everything queued, then flushes the transport.
    fn poll_flush_all(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        ready!(self.codec.poll_write_out(&mut self.io, cx))?;
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        self.codec.unflushed = false;
        Poll::Ready(Ok(()))
    }

    /// Fails the connection for `error`: the close frame naming why goes out
    /// if the socket takes it now.
    fn fail(&mut self, error: Error, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        if self.codec.state == State::Open {
            let code = match &error {
                Error::Utf8(_) => CloseCode::Invalid,
                Error::Capacity(_) => CloseCode::Size,
                _ => CloseCode::Protocol,
            };
            self.codec.close_frame(Some(&CloseFrame { code, reason: "".into() }));
            let _ = self.poll_flush_all(cx);
        }
        self.codec.state = State::Done;
        self.rbuf = Vec::new();
        Poll::Ready(Some(Err(error)))
    }

    /// Reads more bytes into `rbuf`, `want` of them if a frame's length is
    /// known. Ready(0): the server ended the stream.
    fn poll_fill(&mut self, want: usize, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.is_empty() {
            // An idle connection waits here without owning a buffer.
            let mut chunk = [0u8; CHUNK];
            let mut buf = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
            self.rbuf.extend_from_slice(buf.filled());
            return Poll::Ready(Ok(buf.filled().len()));
        }
        let had = self.rbuf.len();
        self.rbuf.resize(had + want.clamp(1, KEEP).max(CHUNK), 0);
        let mut buf = ReadBuf::new(&mut self.rbuf[had..]);
        let read = Pin::new(&mut self.io).poll_read(cx, &mut buf);
        let n = buf.filled().len();
        self.rbuf.truncate(had + n);
        ready!(read)?;
        Poll::Ready(Ok(n))
    }
}

impl Codec {
    /// Parses the header at the start of `buf`, checking it; `None`: not
    /// all of it has arrived.
    fn head(&self, buf: &[u8]) -> Result<Option<Head>, Error> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0F);
        if b0 & 0x70 != 0 {
            return Err(ProtocolError::NonZeroReservedBits.into());
        }
        if b1 & 0x80 != 0 {
            return Err(ProtocolError::MaskedFrameFromServer.into());
        }
        let (len, header) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => (u64::from_be_bytes(b.try_into().expect("eight bytes")), 10),
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        match opcode {
            CONTINUATION | TEXT | BINARY => {}
            CLOSE | PING | PONG if !fin => return Err(ProtocolError::FragmentedControlFrame.into()),
            CLOSE | PING | PONG if len > 125 => return Err(ProtocolError::ControlFrameTooBig.into()),
            CLOSE | PING | PONG => {}
            3..=7 => return Err(ProtocolError::UnknownDataFrameType(opcode).into()),
            _ => return Err(ProtocolError::UnknownControlFrameType(opcode).into()),
        }
        // Checked before a byte of the payload is buffered.
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > self.max_frame as usize {
            return Err(too_long(len, self.max_frame as usize));
        }
        Ok(Some(Head { fin, opcode, header, len }))
    }

    /// Handles one whole frame; a message for the caller, if it completes
    /// one (pings and pongs are shown too: a ping's pong is queued here).
    fn frame(&mut self, head: &Head, payload: &[u8]) -> Result<Option<Message>, Error> {
        if self.state == State::Closed && matches!(head.opcode, CONTINUATION | TEXT | BINARY) {
            return Ok(None); // the server closed; anything after is ignored
        }
        match head.opcode {
            TEXT | BINARY => {
                if let Some((opcode, _)) = self.partial.as_deref() {
                    let data = if *opcode == TEXT { Data::Text } else { Data::Binary };
                    return Err(ProtocolError::ExpectedFragment(data).into());
                }
                if head.fin {
                    return message(head.opcode, Bytes::copy_from_slice(payload)).map(Some);
                }
                self.partial = Some(Box::new((head.opcode, self.grown(Vec::new(), payload)?)));
                Ok(None)
            }
            CONTINUATION => {
                let Some((opcode, bytes)) = self.partial.take().map(|p| *p) else {
                    return Err(ProtocolError::UnexpectedContinueFrame.into());
                };
                let bytes = self.grown(bytes, payload)?;
                if head.fin {
                    return message(opcode, Bytes::from(bytes)).map(Some);
                }
                self.partial = Some(Box::new((opcode, bytes)));
                Ok(None)
            }
            PING => {
                if self.state == State::Open && self.unwritten() < MAX_QUEUED_REPLIES {
                    self.queue(PONG, &[payload]);
                }
                Ok(Some(Message::Ping(Bytes::copy_from_slice(payload))))
            }
            PONG => Ok(Some(Message::Pong(Bytes::copy_from_slice(payload)))),
            _ => {
                let frame = close_frame(payload)?;
                if self.state == State::Open {
                    // Echo the code (RFC 6455 5.5.1); the server then ends TCP.
                    self.close_frame(
                        frame.as_ref().map(|f| CloseFrame { code: f.code, reason: "".into() }).as_ref(),
                    );
                }
                self.state = State::Closed;
                Ok(Some(Message::Close(frame)))
            }
        }
    }

    /// `bytes` with `more` appended, if the message stays within its limit.
    fn grown(&self, mut bytes: Vec<u8>, more: &[u8]) -> Result<Vec<u8>, Error> {
        let len = bytes.len().saturating_add(more.len());
        if len > self.max_message as usize {
            return Err(too_long(len, self.max_message as usize));
        }
        bytes.extend_from_slice(more);
        Ok(bytes)
    }

    /// Queues a close frame carrying `frame`'s code and reason.
    fn close_frame(&mut self, frame: Option<&CloseFrame>) {
        match frame {
            Some(f) => {
                let reason = f.reason.as_bytes();
                let reason = &reason[..floor_char_boundary(f.reason.as_str(), 123)];
                self.queue(CLOSE, &[&u16::from(f.code).to_be_bytes(), reason]);
            }
            None => self.queue(CLOSE, &[]),
        }
    }

    fn unwritten(&self) -> usize {
        self.wbuf.len() - self.written
    }

    /// Frames `parts` (one payload) as a final frame with a fresh mask.
    fn queue(&mut self, opcode: u8, parts: &[&[u8]]) {
        self.unflushed = true;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let w = &mut self.wbuf;
        w.push(0x80 | opcode);
        match len {
            0..=125 => w.push(0x80 | len as u8),
            126..=0xFFFF => {
                w.push(0x80 | 126);
                w.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                w.push(0x80 | 127);
                w.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        let mask = mask_key();
        w.extend_from_slice(&mask);
        let start = w.len();
        for part in parts {
            w.extend_from_slice(part);
        }
        apply_mask(&mut w[start..], mask);
    }

    /// Writes the queued frames out.
    fn poll_write_out<T: AsyncWrite + Unpin>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        while self.unwritten() > 0 {
            let n = ready!(Pin::new(&mut *io).poll_write(cx, &self.wbuf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into())));
            }
            self.written += n;
        }
        self.written = 0;
        self.wbuf.clear();
        if self.wbuf.capacity() > KEEP {
            self.wbuf = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: Transport> Stream for WebSocket<T> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.codec.state == State::Done {
                return Poll::Ready(None);
            }
            // Replies (a pong, our close answer) go out whenever we read;
            // reading never waits for them.
            if this.codec.unwritten() > 0
                && let Poll::Ready(Err(e)) = this.poll_flush_all(cx)
            {
                this.codec.state = State::Done;
                return Poll::Ready(Some(Err(e)));
            }
            let want = match this.codec.head(&this.rbuf) {
                Err(e) => return this.fail(e, cx),
                Ok(Some(head)) if this.rbuf.len() >= head.header + head.len => {
                    let end = head.header + head.len;
                    let done = this.codec.frame(&head, &this.rbuf[head.header..end]);
                    this.rbuf.drain(..end);
                    if this.rbuf.is_empty() && this.rbuf.capacity() > KEEP {
                        this.rbuf = Vec::new();
                    }
                    match done {
                        Ok(Some(msg)) => return Poll::Ready(Some(Ok(msg))),
                        Ok(None) => continue,
                        Err(e) => return this.fail(e, cx),
                    }
                }
                Ok(Some(head)) => head.header + head.len - this.rbuf.len(),
                Ok(None) => 1,
            };
            match ready!(this.poll_fill(want, cx)) {
                Ok(0) => {
                    let open = this.codec.state == State::Open;
                    this.codec.state = State::Done;
                    return Poll::Ready(
                        open.then(|| Err(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake))),
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    this.codec.state = State::Done;
                    return Poll::Ready(Some(Err(Error::Io(e))));
                }
            }
        }
    }
}

impl<T: Transport> Sink<Message> for WebSocket<T> {
    type Error = Error;

    /// Ready once what was queued before is written: one message at a time.
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if !matches!(this.codec.state, State::Open) {
            return Poll::Ready(Err(ProtocolError::SendAfterClosing.into()));
        }
        let WebSocket { io, codec, .. } = this;
        codec.poll_write_out(io, cx)
    }

    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<(), Error> {
        let codec = &mut self.get_mut().codec;
        if codec.state != State::Open {
            return Err(ProtocolError::SendAfterClosing.into());
        }
        match msg {
            Message::Text(t) => codec.queue(TEXT, &[t.as_bytes()]),
            Message::Binary(b) => codec.queue(BINARY, &[&b]),
            Message::Ping(p) => codec.queue(PING, &[&p]),
            Message::Pong(p) => codec.queue(PONG, &[&p]),
            Message::Close(frame) => {
                codec.close_frame(frame.as_ref());
                codec.state = State::CloseSent;
            }
            Message::Frame(_) => return Err(ProtocolError::InvalidOpcode(0).into()),
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_flush_all(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if this.codec.state == State::Open {
            this.codec.close_frame(None);
            this.codec.state = State::CloseSent;
        }
        this.poll_flush_all(cx)
    }
}

/// A data message of `opcode`; text must be UTF-8 (RFC 6455 8.1).
fn message(opcode: u8, bytes: Bytes) -> Result<Message, Error> {
    if opcode == BINARY {
        return Ok(Message::Binary(bytes));
    }
    Utf8Bytes::try_from(bytes).map(Message::Text).map_err(|e| Error::Utf8(e.to_string()))
}

/// A close frame's payload: nothing, or a code a peer may send and a UTF-8
/// reason (RFC 6455 5.5.1, 7.4).
fn close_frame(payload: &[u8]) -> Result<Option<CloseFrame>, Error> {
    let [hi, lo, reason @ ..] = payload else {
        return match payload.len() {
            0 => Ok(None),
            _ => Err(ProtocolError::InvalidCloseSequence.into()),
        };
    };
    let code = CloseCode::from(u16::from_be_bytes([*hi, *lo]));
    if !code.is_allowed() {
        return Err(ProtocolError::InvalidCloseSequence.into());
    }
    let reason = std::str::from_utf8(reason).map_err(|e| Error::Utf8(e.to_string()))?;
    Ok(Some(CloseFrame { code, reason: reason.into() }))
}

fn too_long(size: usize, max_size: usize) -> Error {
    Error::Capacity(CapacityError::MessageTooLong { size, max_size })
}

/// The largest index <= `max` that starts a character of `s`.
fn floor_char_boundary(s: &str, max: usize) -> usize {
    (0..=max.min(s.len())).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0)
}

/// XORs `buf` with the repeating `mask`, eight bytes at a time.
fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes((&*chunk).try_into().expect("eight bytes")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    // The tail starts at a multiple of 8, so the mask lines up from 0 again.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

thread_local! {
    /// The operating system's randomness, drawn 1 KiB at a time: masks stay
    /// unpredictable (RFC 6455 5.3) at one system call per 256 frames.
    static RANDOM: RefCell<([u8; 1024], usize)> = const { RefCell::new(([0; 1024], 1024)) };
}

/// A fresh masking key.
fn mask_key() -> [u8; 4] {
    RANDOM.with_borrow_mut(|(pool, used)| {
        if *used == pool.len() {
            // getrandom(2) does not fail once the kernel's pool is seeded,
            // which it is long before a worker runs.
            ring::rand::SystemRandom::new().fill(pool).expect("the operating system's randomness");
            *used = 0;
        }
        let key = pool[*used..*used + 4].try_into().expect("four bytes");
        *used += 4;
        key
    })
}

#[cfg(test)]
mod tests;
