//! The messages. Variant order is the wire format (postcard writes the index as a varint):
//! append new variants at the end, and bump the protocol version for anything else.

use serde::{Deserialize, Serialize};

/// Which end of the link a `Hello` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Role {
    /// The device running scion-edge.
    Host,
    /// The microcontroller.
    Mcu,
}

/// Everything either side can say.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Message<'a> {
    /// First words on a (re)connected link.
    Hello {
        /// The sender's [`crate::PROTOCOL_VERSION`].
        protocol: u8,
        /// Who is talking.
        role: Role,
        /// A name for logs (firmware or host version), at most 32 bytes.
        name: &'a str,
    },
    /// A classification result (host → MCU).
    Result {
        /// Class index in the model's labels, or [`crate::UNKNOWN_LABEL`] (65535) when
        /// the frame shows none of them.
        label: u16,
        /// Its (smoothed) probability.
        score: f32,
        /// The frame's sequence number.
        seq: u32,
        /// Capture to result, microseconds.
        latency_us: u32,
    },
    /// I am alive (either way).
    Heartbeat {
        /// Milliseconds since the sender started.
        uptime_ms: u32,
    },
    /// The model now serving (host → MCU).
    ModelInfo {
        /// The first 6 bytes of the model file's sha256.
        id: [u8; 6],
        /// Number of classes.
        classes: u16,
        /// The card's name, at most 32 bytes.
        name: &'a str,
    },
    /// Announce labels only above this probability (MCU → host).
    SetThreshold {
        /// 0..=1.
        threshold: f32,
    },
    /// Stop sending results (MCU → host).
    Pause,
    /// Send results again (MCU → host).
    Resume,
    /// Ask for a [`Message::Status`] (MCU → host).
    RequestStatus,
    /// The answer to [`Message::RequestStatus`] (host → MCU).
    Status {
        /// Whether results are paused.
        paused: bool,
        /// The threshold in use.
        threshold: f32,
        /// Frames classified since start.
        frames: u32,
    },
}
