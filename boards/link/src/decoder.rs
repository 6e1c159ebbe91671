//! A streaming decoder: feed bytes as they arrive; each zero byte ends a frame. Noise,
//! truncated frames and runaway lengths cost only the frames they touch, and memory is
//! the fixed buffer.

use crate::{ErrorKind, LinkError, MAX_FRAME, Message, cobs_decode_in_place, decode_body};

/// Decodes frames from a byte stream into a buffer of `N` bytes.
pub struct Decoder<const N: usize = MAX_FRAME> {
    buf: [u8; N],
    len: usize,
    overflowed: bool,
}

impl<const N: usize> Default for Decoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Decoder<N> {
    /// An empty decoder.
    pub const fn new() -> Self {
        Decoder {
            buf: [0; N],
            len: 0,
            overflowed: false,
        }
    }

    /// Feed one byte. At a frame's end: the message, or why the frame was bad. Zeros between
    /// frames (idle line) give nothing.
    pub fn push(&mut self, byte: u8) -> Option<Result<Message<'_>, LinkError>> {
        if byte != 0 {
            if self.len == N {
                self.overflowed = true;
            } else {
                self.buf[self.len] = byte;
                self.len += 1;
            }
            return None;
        }
        let len = core::mem::take(&mut self.len);
        if core::mem::take(&mut self.overflowed) {
            return Some(Err(LinkError::new(ErrorKind::Overflow)));
        }
        if len == 0 {
            return None;
        }
        Some(match cobs_decode_in_place(&mut self.buf[..len]) {
            Some(n) => decode_body(&self.buf[..n]),
            None => Err(LinkError::new(ErrorKind::Framing)),
        })
    }

    /// Forget a partly received frame (after a reconnect).
    pub fn reset(&mut self) {
        self.len = 0;
        self.overflowed = false;
    }
}
