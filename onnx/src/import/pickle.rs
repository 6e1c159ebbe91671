//! A minimal, safe pickle reader: it builds a value tree and never calls code. Globals and
//! `REDUCE` calls are recorded as data for the caller (the torch reader) to interpret.
//! It covers the opcodes `torch.save` emits (protocols 2 to 4).

use std::collections::HashMap;

/// A decoded pickle value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// An integer too large for i64, as little-endian two's complement bytes.
    BigInt(Vec<u8>),
    /// A float.
    Float(f64),
    /// A unicode string.
    Str(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A reference to `module.name`.
    Global {
        /// Module path.
        module: String,
        /// Attribute name.
        name: String,
    },
    /// `callable(*args)`, not evaluated.
    Call {
        /// The callable (usually a [`Value::Global`]).
        callable: Box<Value>,
        /// Its arguments (a tuple).
        args: Box<Value>,
    },
    /// `obj.__setstate__(state)`, not evaluated.
    Build {
        /// The object.
        object: Box<Value>,
        /// Its state.
        state: Box<Value>,
    },
    /// A persistent id (torch uses them for tensor storages).
    PersistentId(Box<Value>),
}

/// Why a pickle could not be read.
#[derive(Debug, thiserror::Error)]
#[error("pickle at byte {offset}: {message}")]
pub struct PickleError {
    /// Byte offset of the failing opcode.
    pub offset: usize,
    /// What went wrong.
    pub message: String,
}

enum Item {
    Mark,
    Value(Value),
}

/// Read one pickle from `data`; returns the value and the number of bytes consumed
/// (legacy torch files hold several pickles back to back).
pub fn read(data: &[u8]) -> Result<(Value, usize), PickleError> {
    Reader {
        data,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
    }
    .run()
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    memo: HashMap<u32, Value>,
}

impl Reader<'_> {
    fn fail<T>(&self, message: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError {
            offset: self.pos,
            message: message.into(),
        })
    }

    fn take(&mut self, n: usize) -> Result<&[u8], PickleError> {
        // `n` comes from the file (BINBYTES8 and friends): compared without adding, so a
        // length near u64::MAX cannot wrap past the check.
        if n > self.data.len() - self.pos {
            return self.fail("unexpected end of data");
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, PickleError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.data[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return self.fail("unterminated line");
        };
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> Result<String, PickleError> {
        let b = self.take(n)?.to_vec();
        String::from_utf8(b).or_else(|_| self.fail("invalid UTF-8 in string"))
    }

    fn push(&mut self, v: Value) {
        self.stack.push(Item::Value(v));
    }
    fn pop(&mut self) -> Result<Value, PickleError> {
        match self.stack.pop() {
            Some(Item::Value(v)) => Ok(v),
            Some(Item::Mark) => self.fail("unexpected mark"),
            None => self.fail("stack underflow"),
        }
    }
    fn top(&mut self) -> Result<&mut Value, PickleError> {
        match self.stack.last_mut() {
            Some(Item::Value(v)) => Ok(v),
            _ => Err(PickleError {
                offset: self.pos,
                message: "no value on the stack".into(),
            }),
        }
    }
    fn pop_to_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let mut items = Vec::new();
        loop {
            match self.stack.pop() {
                Some(Item::Value(v)) => items.push(v),
                Some(Item::Mark) => break,
                None => return self.fail("no mark on the stack"),
            }
        }
        items.reverse();
        Ok(items)
    }
    fn memo_get(&mut self, key: u32) -> Result<(), PickleError> {
        match self.memo.get(&key) {
            Some(v) => {
                let v = v.clone();
                self.push(v);
                Ok(())
            }
            None => self.fail(format!("memo key {key} not set")),
        }
    }
    fn memo_put(&mut self, key: u32) -> Result<(), PickleError> {
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    fn set_items(&mut self, pairs: Vec<Value>) -> Result<(), PickleError> {
        if !pairs.len().is_multiple_of(2) {
            return self.fail("odd number of items for a dict");
        }
        let target = self.top()?;
        let dict = match target {
            Value::Dict(d) => d,
            // `OrderedDict()` is pickled as a call; items are set on its result.
            Value::Call { .. } => {
                *target = Value::Dict(Vec::new());
                let Value::Dict(d) = target else {
                    unreachable!()
                };
                d
            }
            _ => {
                return Err(PickleError {
                    offset: self.pos,
                    message: "SETITEM on a non-dict".into(),
                });
            }
        };
        let mut it = pairs.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            dict.push((k, v));
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        match self.top()? {
            Value::List(l) => {
                l.extend(items);
                Ok(())
            }
            _ => self.fail("APPEND on a non-list"),
        }
    }

    fn run(mut self) -> Result<(Value, usize), PickleError> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return self.fail(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.u64()?;
                } // FRAME: a length hint only
                b'.' => {
                    let v = self.pop()?;
                    return Ok((v, self.pos));
                }
                b'(' => self.stack.push(Item::Mark),
                b'0' => {
                    self.stack.pop();
                }
                b'1' => {
                    self.pop_to_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v);
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(v as i64))
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v as i64))
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.u8()? as usize
                    } else {
                        self.u32()? as usize
                    };
                    let bytes = self.take(n)?.to_vec();
                    self.push(long_from_bytes(bytes));
                }
                b'I' => {
                    let line = self.line()?;
                    let v = match line.as_str() {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        s => match s.parse() {
                            Ok(i) => Value::Int(i),
                            Err(_) => return self.fail(format!("bad INT '{s}'")),
                        },
                    };
                    self.push(v)
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push(Value::Float(f64::from_be_bytes(a)))
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.string(n)?;
                    self.push(Value::Str(s))
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.push(Value::Str(s))
                }
                0x8d => {
                    let n = self.u64()? as usize;
                    let s = self.string(n)?;
                    self.push(Value::Str(s))
                }
                b'T' | b'U' => {
                    let n = if op == b'T' {
                        self.u32()? as usize
                    } else {
                        self.u8()? as usize
                    };
                    let b = self.take(n)?;
                    let s = String::from_utf8_lossy(b).into_owned();
                    self.push(Value::Str(s))
                }
                b'B' | b'C' | 0x8e => {
                    let n = match op {
                        b'B' => self.u32()? as usize,
                        b'C' => self.u8()? as usize,
                        _ => self.u64()? as usize,
                    };
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b))
                }
                b')' => self.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_to_mark()?;
                    self.push(Value::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Value::Tuple(items))
                }
                b']' => self.push(Value::List(Vec::new())),
                b'l' => {
                    let items = self.pop_to_mark()?;
                    self.push(Value::List(items))
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?
                }
                b'e' => {
                    let items = self.pop_to_mark()?;
                    self.append(items)?
                }
                b'}' => self.push(Value::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_to_mark()?;
                    self.push(Value::Dict(Vec::new()));
                    self.set_items(items)?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_to_mark()?;
                    self.set_items(items)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Value::Global { module, name })
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(module), Value::Str(name)) => {
                            self.push(Value::Global { module, name })
                        }
                        _ => return self.fail("STACK_GLOBAL needs two strings"),
                    }
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.push(Value::Call {
                        callable: Box::new(callable),
                        args: Box::new(args),
                    })
                }
                b'b' => {
                    let state = self.pop()?;
                    let object = self.pop()?;
                    // Dicts (OrderedDict) only receive metadata through BUILD; keep them as dicts.
                    let built = match object {
                        Value::Dict(_) => object,
                        object => Value::Build {
                            object: Box::new(object),
                            state: Box::new(state),
                        },
                    };
                    self.push(built)
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push(Value::PersistentId(Box::new(pid)))
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    self.memo_get(k)?
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?
                }
                other => {
                    self.pos -= 1;
                    return self.fail(format!("unsupported opcode 0x{other:02x}"));
                }
            }
        }
    }
}

fn long_from_bytes(bytes: Vec<u8>) -> Value {
    if bytes.len() <= 8 {
        let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
        let mut a = if negative { [0xffu8; 8] } else { [0u8; 8] };
        a[..bytes.len()].copy_from_slice(&bytes);
        Value::Int(i64::from_le_bytes(a))
    } else {
        Value::BigInt(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::torch::LEGACY_MAGIC;

    #[test]
    fn reads_exact_protocol_2_bytes() {
        // pickle.dumps({'a': (1, 300, -2, 'x')}, protocol=2)
        let bytes = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01(K\x01M,\x01J\xfe\xff\xff\xffX\x01\x00\x00\x00xq\x02tq\x03s.";
        let (v, used) = read(bytes).expect("valid pickle");
        assert_eq!(used, bytes.len());
        assert_eq!(
            v,
            Value::Dict(vec![(
                Value::Str("a".into()),
                Value::Tuple(vec![
                    Value::Int(1),
                    Value::Int(300),
                    Value::Int(-2),
                    Value::Str("x".into())
                ])
            )])
        );
    }

    #[test]
    fn long1_big_magic_number() {
        // pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2): torch's legacy magic number
        let bytes = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.";
        let (v, _) = read(bytes).expect("valid pickle");
        assert_eq!(v, Value::BigInt(LEGACY_MAGIC.to_vec()));
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let bytes = b"\x80\x02}q\x00X\x05\x00\x00\x00ab";
        let err = read(bytes).expect_err("truncated");
        assert!(err.message.contains("end of data"), "{err}");
    }
}
