//! Consistent Overhead Byte Stuffing: a frame body without zero bytes, at most one extra
//! byte per 254, so a zero can delimit frames.

/// The longest COBS encoding of `n` bytes (without the delimiter).
pub const fn cobs_max_encoded_len(n: usize) -> usize {
    n + n / 254 + 1
}

/// Encode `input` into `out` (at least [`cobs_max_encoded_len`] long); returns the length.
pub fn cobs_encode(input: &[u8], out: &mut [u8]) -> usize {
    let mut code_at = 0;
    let mut write = 1;
    let mut code = 1u8;
    for &byte in input {
        if byte == 0 {
            out[code_at] = code;
            code_at = write;
            write += 1;
            code = 1;
        } else {
            out[write] = byte;
            write += 1;
            code += 1;
            if code == 0xFF {
                out[code_at] = code;
                code_at = write;
                write += 1;
                code = 1;
            }
        }
    }
    out[code_at] = code;
    write
}

/// Decode a COBS block (no delimiter) in place; returns the decoded length, or `None`
/// when the bytes are not valid COBS.
pub fn cobs_decode_in_place(buf: &mut [u8]) -> Option<usize> {
    let (mut read, mut write) = (0, 0);
    while read < buf.len() {
        let code = buf[read] as usize;
        if code == 0 {
            return None;
        }
        read += 1;
        let end = read + code - 1;
        if end > buf.len() || buf[read..end].contains(&0) {
            return None;
        }
        buf.copy_within(read..end, write);
        write += code - 1;
        read = end;
        if code != 0xFF && read < buf.len() {
            buf[write] = 0;
            write += 1;
        }
    }
    Some(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(input: &[u8]) {
        let mut out = [0u8; 600];
        let n = cobs_encode(input, &mut out);
        assert!(n <= cobs_max_encoded_len(input.len()));
        assert!(!out[..n].contains(&0));
        let decoded = cobs_decode_in_place(&mut out[..n]).expect("valid");
        assert_eq!(&out[..decoded], input);
    }

    #[test]
    fn known_encodings() {
        // The examples of Cheshire & Baker's paper (and Wikipedia's table).
        let cases: [(&[u8], &[u8]); 4] = [
            (&[0x00], &[0x01, 0x01]),
            (&[0x00, 0x00], &[0x01, 0x01, 0x01]),
            (&[0x11, 0x22, 0x00, 0x33], &[0x03, 0x11, 0x22, 0x02, 0x33]),
            (&[0x11, 0x00, 0x00, 0x00], &[0x02, 0x11, 0x01, 0x01, 0x01]),
        ];
        let mut out = [0u8; 16];
        for (input, expected) in cases {
            let n = cobs_encode(input, &mut out);
            assert_eq!(&out[..n], expected);
        }
    }

    #[test]
    fn long_runs_round_trip() {
        let ones = [1u8; 300];
        round_trip(&ones[..253]);
        round_trip(&ones[..254]);
        round_trip(&ones[..255]);
        round_trip(&ones);
        round_trip(&[]);
    }

    #[test]
    fn invalid_blocks_are_refused() {
        assert_eq!(cobs_decode_in_place(&mut [0x05, 0x11]), None);
        assert_eq!(cobs_decode_in_place(&mut [0x02, 0x00]), None);
    }
}
