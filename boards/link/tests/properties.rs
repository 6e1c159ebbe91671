//! Property tests: encode → decode is the identity for every message; any byte stream
//! decodes without panic in bounded memory; noise costs at most the frames it touches.

use proptest::prelude::*;
use scion_link::{Decoder, ErrorKind, MAX_FRAME, Message, Role, encode};

/// Names within the 32-byte limit (any UTF-8).
fn name() -> impl Strategy<Value = String> {
    "\\PC{0,8}".prop_filter("at most 32 bytes", |s| s.len() <= 32)
}

fn message() -> impl Strategy<Value = (u8, u16, u32, u32, f32, bool, [u8; 6], String)> {
    (
        0u8..9,
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        any::<f32>().prop_filter("NaN != NaN", |f| !f.is_nan()),
        any::<bool>(),
        any::<[u8; 6]>(),
        name(),
    )
}

fn build<'a>(
    (kind, a, b, c, f, flag, id, name): &'a (u8, u16, u32, u32, f32, bool, [u8; 6], String),
) -> Message<'a> {
    match kind {
        0 => Message::Hello {
            protocol: *a as u8,
            role: if *flag { Role::Host } else { Role::Mcu },
            name,
        },
        1 => Message::Result {
            label: *a,
            score: *f,
            seq: *b,
            latency_us: *c,
        },
        2 => Message::Heartbeat { uptime_ms: *b },
        3 => Message::ModelInfo {
            id: *id,
            classes: *a,
            name,
        },
        4 => Message::SetThreshold { threshold: *f },
        5 => Message::Pause,
        6 => Message::Resume,
        7 => Message::RequestStatus,
        _ => Message::Status {
            paused: *flag,
            threshold: *f,
            frames: *b,
        },
    }
}

proptest! {
    #[test]
    fn encode_then_decode_is_the_identity(parts in message()) {
        let message = build(&parts);
        let mut frame = [0u8; MAX_FRAME];
        let n = encode(&message, &mut frame).expect("fits");
        prop_assert_eq!(frame[n - 1], 0);
        prop_assert!(!frame[..n - 1].contains(&0));
        let mut decoder: Decoder = Decoder::new();
        for &byte in &frame[..n - 1] {
            prop_assert!(decoder.push(byte).is_none());
        }
        let decoded = decoder.push(0).expect("a frame").expect("valid");
        prop_assert_eq!(decoded, message);
    }

    #[test]
    fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut decoder: Decoder = Decoder::new();
        for byte in bytes {
            let _ = decoder.push(byte);
        }
    }

    #[test]
    fn noise_costs_at_most_the_frames_it_touches(
        seqs in 1usize..40,
        hits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
    ) {
        // A stream of results; some bytes overwritten by noise.
        let mut stream = Vec::new();
        let mut bounds = Vec::new();
        for seq in 0..seqs {
            let mut frame = [0u8; MAX_FRAME];
            let n = encode(
                &Message::Result { label: 7, score: 0.5, seq: seq as u32, latency_us: 1000 },
                &mut frame,
            ).expect("fits");
            bounds.push(stream.len()..stream.len() + n);
            stream.extend_from_slice(&frame[..n]);
        }
        let mut touched = std::collections::BTreeSet::new();
        for (at, value) in hits {
            let at = at % stream.len();
            if stream[at] != value {
                stream[at] = value;
                // A zero written into a frame splits it; one overwriting a delimiter
                // merges two frames: either way only these frames are at risk.
                for (i, b) in bounds.iter().enumerate() {
                    if b.contains(&at) {
                        touched.insert(i);
                        if at + 1 == b.end {
                            touched.insert(i + 1);
                        }
                    }
                }
            }
        }
        let mut decoder: Decoder = Decoder::new();
        let mut received = Vec::new();
        for byte in stream {
            if let Some(Ok(Message::Result { seq, .. })) = decoder.push(byte) {
                received.push(seq as usize);
            }
        }
        let expected: Vec<usize> = (0..seqs).filter(|s| !touched.contains(s)).collect();
        // Every untouched frame arrives, in order; nothing arrives twice.
        let mut untouched_received: Vec<usize> =
            received.iter().copied().filter(|s| !touched.contains(s)).collect();
        untouched_received.dedup();
        prop_assert_eq!(untouched_received, expected);
        prop_assert!(received.windows(2).all(|w| w[0] < w[1]), "{:?}", received);
    }
}

#[test]
fn a_runaway_frame_is_an_overflow_then_the_stream_recovers() {
    let mut decoder: Decoder = Decoder::new();
    for _ in 0..500 {
        assert!(decoder.push(0x55).is_none());
    }
    let error = decoder.push(0).expect("frame end").expect_err("overflow");
    assert_eq!(error.kind(), ErrorKind::Overflow);
    let mut frame = [0u8; MAX_FRAME];
    let n = encode(&Message::Pause, &mut frame).expect("fits");
    for &byte in &frame[..n - 1] {
        assert!(decoder.push(byte).is_none());
    }
    assert_eq!(decoder.push(0), Some(Ok(Message::Pause)));
}
