//! The examples of `SPEC.md`, byte for byte: every message type encodes to exactly the
//! frame written there, and that frame decodes back to the message.

use scion_link::{Decoder, ErrorKind, MAX_FRAME, Message, Role, encode};

const SPEC: &str = include_str!("../SPEC.md");

fn examples() -> Vec<Message<'static>> {
    vec![
        Message::Hello {
            protocol: 1,
            role: Role::Mcu,
            name: "fw-0.3",
        },
        Message::Result {
            label: 1,
            score: 0.75,
            seq: 300,
            latency_us: 14_000,
        },
        Message::Heartbeat { uptime_ms: 60_000 },
        Message::ModelInfo {
            id: [0x90, 0xc6, 0x86, 0x68, 0xf3, 0x0b],
            classes: 1000,
            name: "lite0",
        },
        Message::SetThreshold { threshold: 0.5 },
        Message::Pause,
        Message::Resume,
        Message::RequestStatus,
        Message::Status {
            paused: false,
            threshold: 0.5,
            frames: 128,
        },
    ]
}

/// `(message as written, frame bytes)` from the spec's example table.
fn spec_examples() -> Vec<(String, Vec<u8>)> {
    let table = SPEC
        .split("<!-- examples: checked by tests/wire.rs -->")
        .nth(1)
        .expect("the examples marker");
    table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and separator
        .map(|line| {
            let cells: Vec<&str> = line
                .split('|')
                .map(|c| c.trim().trim_matches('`'))
                .collect();
            let bytes = cells[2]
                .split_whitespace()
                .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
                .collect();
            (cells[1].to_string(), bytes)
        })
        .collect()
}

#[test]
fn every_message_type_encodes_to_the_bytes_in_the_spec() {
    let spec = spec_examples();
    let examples = examples();
    assert_eq!(spec.len(), examples.len(), "one example per message type");
    for ((written, bytes), message) in spec.iter().zip(&examples) {
        assert_eq!(written, &format!("{message:?}"));
        let mut frame = [0u8; MAX_FRAME];
        let n = encode(message, &mut frame).expect("fits");
        assert_eq!(&frame[..n], bytes.as_slice(), "{written}");
        let mut decoder: Decoder = Decoder::new();
        for &b in &bytes[..bytes.len() - 1] {
            assert!(decoder.push(b).is_none());
        }
        assert_eq!(decoder.push(0), Some(Ok(*message)), "{written}");
    }
}

#[test]
fn damaged_frames_are_refused_by_kind() {
    let pause = [0x05, 0x01, 0x05, 0x9b, 0x7e, 0x00];
    let feed = |bytes: &[u8]| {
        let mut decoder: Decoder = Decoder::new();
        let mut last = None;
        for &b in bytes {
            if let Some(r) = decoder.push(b) {
                last = Some(r.map(|m| format!("{m:?}")));
            }
        }
        last.expect("a frame")
    };
    // A flipped bit: CRC.
    let mut flipped = pause;
    flipped[2] ^= 0x01;
    assert_eq!(feed(&flipped).expect_err("crc").kind(), ErrorKind::Crc);
    // Version 2, with a valid CRC: refused, naming the version.
    let body = [0x02, 0x05];
    let crc = scion_link::crc16(&body).to_le_bytes();
    let mut v2 = [0u8; 8];
    let n = scion_link::cobs_encode(&[body[0], body[1], crc[0], crc[1]], &mut v2);
    let error = feed(&v2[..=n]).expect_err("version");
    assert_eq!(error.kind(), ErrorKind::Version);
    assert_eq!(error.version(), Some(2));
    // A truncated frame (the code byte promises more than arrives): framing.
    assert_eq!(
        feed(&[0x05, 0x01, 0x05, 0x00]).expect_err("short").kind(),
        ErrorKind::Framing
    );
    // An unknown message index with a valid CRC: malformed.
    let body = [0x01, 0x40];
    let crc = scion_link::crc16(&body).to_le_bytes();
    let mut unknown = [0u8; 8];
    let n = scion_link::cobs_encode(&[body[0], body[1], crc[0], crc[1]], &mut unknown);
    assert_eq!(
        feed(&unknown[..=n]).expect_err("unknown").kind(),
        ErrorKind::Malformed
    );
    // And the stream goes on: the good frame after all of that decodes.
    let mut stream = flipped.to_vec();
    stream.extend_from_slice(&pause);
    assert_eq!(feed(&stream), Ok("Pause".to_string()));
}

#[test]
fn a_name_too_long_for_a_frame_is_refused_at_encoding() {
    let mut frame = [0u8; MAX_FRAME];
    let long = "x".repeat(70);
    let error = encode(
        &Message::Hello {
            protocol: 1,
            role: Role::Host,
            name: &long,
        },
        &mut frame,
    )
    .expect_err("too long");
    assert_eq!(error.kind(), ErrorKind::Overflow);
    let mut small = [0u8; 4];
    assert_eq!(
        encode(&Message::Pause, &mut small)
            .expect_err("small")
            .kind(),
        ErrorKind::BufferTooSmall
    );
}

#[test]
fn the_unknown_label_is_65535_on_the_wire() {
    let message = Message::Result {
        label: scion_link::UNKNOWN_LABEL,
        score: 0.75,
        seq: 300,
        latency_us: 14_000,
    };
    let mut frame = [0u8; MAX_FRAME];
    let n = encode(&message, &mut frame).expect("fits");
    // The frame SPEC.md gives for it.
    let written = SPEC
        .split("is then the top class's probability; on the wire, `")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .expect("the unknown example in SPEC.md");
    let bytes: Vec<u8> = written
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect();
    assert_eq!(&frame[..n], bytes.as_slice());
    let mut decoder: Decoder = Decoder::new();
    for &b in &bytes[..bytes.len() - 1] {
        assert!(decoder.push(b).is_none());
    }
    assert_eq!(decoder.push(0), Some(Ok(message)));
}
