//! `scion-link`: what the device and a microcontroller say to each other over a UART.
//!
//! A message is [`postcard`]-encoded, prefixed with a protocol version byte, followed by a
//! CRC-16, COBS-encoded and terminated by a zero byte (see `SPEC.md` for the bytes). Zero is
//! never inside a frame, so a receiver that starts mid-stream or loses bytes to noise
//! resynchronises at the next zero, losing only the frames the damage touched.
//!
//! `no_std` and no allocation: the same crate runs in firmware (with `defmt` logging if
//! wanted) and on the host.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

mod cobs;
mod crc;
mod decoder;
mod message;

pub use cobs::{cobs_decode_in_place, cobs_encode, cobs_max_encoded_len};
pub use crc::crc16;
pub use decoder::Decoder;
pub use message::{Message, Role};

/// The protocol version this crate speaks (the first byte of every frame body).
pub const PROTOCOL_VERSION: u8 = 1;

/// The `Result` label meaning "none of the model's classes" (the model's unknown rule
/// rejected the frame): no class index can reach it.
pub const UNKNOWN_LABEL: u16 = u16::MAX;

/// The largest frame body (version, payload, CRC) either side may send.
pub const MAX_BODY: usize = 64;

/// The largest frame on the wire, delimiter included.
pub const MAX_FRAME: usize = cobs_max_encoded_len(MAX_BODY) + 1;

/// What went wrong, for generic code (count it, resynchronise, or give up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ErrorKind {
    /// The bytes between two zeros are not valid COBS (noise, a lost byte).
    Framing,
    /// The CRC does not match (noise).
    Crc,
    /// The frame is from another protocol version.
    Version,
    /// The payload does not decode as a message (or has bytes left over).
    Malformed,
    /// The frame is longer than [`MAX_BODY`] allows (noise, or a missing delimiter).
    Overflow,
    /// The output buffer is too small for the encoded frame.
    BufferTooSmall,
}

/// A link error: its kind, and for [`ErrorKind::Version`] the version received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LinkError {
    kind: ErrorKind,
    version: u8,
}

impl LinkError {
    /// An error of `kind`.
    pub const fn new(kind: ErrorKind) -> Self {
        LinkError { kind, version: 0 }
    }

    /// What kind of error this is.
    pub const fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The version byte of a frame from another protocol version.
    pub const fn version(&self) -> Option<u8> {
        match self.kind {
            ErrorKind::Version => Some(self.version),
            _ => None,
        }
    }
}

impl core::fmt::Display for LinkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.kind {
            ErrorKind::Framing => f.write_str("bad COBS framing"),
            ErrorKind::Crc => f.write_str("CRC mismatch"),
            ErrorKind::Version => write!(
                f,
                "protocol version {} (this side speaks {PROTOCOL_VERSION})",
                self.version
            ),
            ErrorKind::Malformed => f.write_str("payload is not a valid message"),
            ErrorKind::Overflow => write!(f, "frame longer than {MAX_BODY} bytes"),
            ErrorKind::BufferTooSmall => f.write_str("output buffer too small"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for LinkError {}

/// Encode `message` as one frame (delimiter included) into `out`; returns its length.
pub fn encode(message: &Message<'_>, out: &mut [u8]) -> Result<usize, LinkError> {
    let mut body = [0u8; MAX_BODY];
    body[0] = PROTOCOL_VERSION;
    let payload_len = postcard::to_slice(message, &mut body[1..MAX_BODY - 2])
        .map_err(|_| LinkError::new(ErrorKind::Overflow))?
        .len();
    let crc_at = 1 + payload_len;
    let crc = crc16(&body[..crc_at]);
    body[crc_at..crc_at + 2].copy_from_slice(&crc.to_le_bytes());
    let body = &body[..crc_at + 2];
    if out.len() < cobs_max_encoded_len(body.len()) + 1 {
        return Err(LinkError::new(ErrorKind::BufferTooSmall));
    }
    let n = cobs_encode(body, out);
    out[n] = 0;
    Ok(n + 1)
}

/// Check and decode one frame body (COBS already removed): version, CRC, message.
pub fn decode_body(body: &[u8]) -> Result<Message<'_>, LinkError> {
    if body.len() < 3 {
        return Err(LinkError::new(ErrorKind::Framing));
    }
    let (content, crc) = body.split_at(body.len() - 2);
    if crc16(content) != u16::from_le_bytes([crc[0], crc[1]]) {
        return Err(LinkError::new(ErrorKind::Crc));
    }
    if content[0] != PROTOCOL_VERSION {
        return Err(LinkError {
            kind: ErrorKind::Version,
            version: content[0],
        });
    }
    match postcard::take_from_bytes::<Message<'_>>(&content[1..]) {
        Ok((message, [])) => Ok(message),
        _ => Err(LinkError::new(ErrorKind::Malformed)),
    }
}
