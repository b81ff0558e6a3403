//! Finding `invalidate` pushes in the raw bytes of a RESP3 connection.
//!
//! The scanner reads the same bytes as redis-rs's parser, just before it, so an invalidation is
//! applied before the reply that follows it on the wire can be acted upon. It understands only
//! as much of RESP3 as it needs to find frame boundaries and pushes.

/// RESP nesting the scanner follows; Redis never nests invalidations deeper than 2.
const MAX_DEPTH: usize = 8;

/// Finds `invalidate` pushes in the byte stream of a RESP3 connection.
#[derive(Default)]
pub(super) struct Scanner {
    /// Bytes of a frame that has not fully arrived yet.
    pending: Vec<u8>,
    pub(super) broken: bool,
}

/// The parts of a RESP3 frame the scanner cares about.
enum Node {
    Text(std::ops::Range<usize>),
    List(Vec<Node>),
    Push(Vec<Node>),
    Nil,
    Other,
}

pub(super) struct Malformed;

impl Scanner {
    pub(super) fn is_idle(&self) -> bool {
        self.pending.is_empty() && !self.broken
    }

    /// Hands `invalidate` the keys of every invalidation that `read` completes (`None`: all
    /// keys), in the order they arrived.
    pub(super) fn feed(
        &mut self,
        read: &[u8],
        mut invalidate: impl FnMut(Option<Vec<&[u8]>>),
    ) -> Result<(), Malformed> {
        self.pending.extend_from_slice(read);
        let mut consumed = 0;
        while let Some((node, end)) = parse(&self.pending, consumed, 0)? {
            if let Some(keys) = invalidated(&node, &self.pending) {
                invalidate(keys);
            }
            consumed = end;
        }
        self.pending.drain(..consumed);
        Ok(())
    }
}

/// The keys an `invalidate` push names (`None` inside: all of them), or `None` for any other
/// frame.
fn invalidated<'a>(node: &Node, buf: &'a [u8]) -> Option<Option<Vec<&'a [u8]>>> {
    let Node::Push(items) = node else {
        return None;
    };
    match items.as_slice() {
        [Node::Text(kind), keys] if buf[kind.clone()].eq_ignore_ascii_case(b"invalidate") => {
            match keys {
                Node::List(keys) => Some(Some(
                    keys.iter()
                        .filter_map(|key| match key {
                            Node::Text(range) => Some(&buf[range.clone()]),
                            _ => None,
                        })
                        .collect(),
                )),
                _ => Some(None),
            }
        }
        _ => None,
    }
}

/// Parses the frame starting at `pos`: `Ok(None)` if it has not fully arrived.
fn parse(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Node, usize)>, Malformed> {
    if depth > MAX_DEPTH {
        return Err(Malformed);
    }
    let Some(line_end) = find_crlf(buf, pos) else {
        return Ok(None);
    };
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let line = pos + 1..line_end;
    let next = line_end + 2;
    let number = || -> Result<i64, Malformed> {
        std::str::from_utf8(&buf[line.clone()])
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or(Malformed)
    };
    match kind {
        b'+' => Ok(Some((Node::Text(line.clone()), next))),
        b'-' | b':' | b'#' | b',' | b'(' => Ok(Some((Node::Other, next))),
        b'_' => Ok(Some((Node::Nil, next))),
        b'$' | b'!' | b'=' => {
            let Ok(len) = usize::try_from(number()?) else {
                return Ok(Some((Node::Nil, next)));
            };
            let end = next.checked_add(len).ok_or(Malformed)?;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(Malformed);
            }
            Ok(Some((Node::Text(next..end), end + 2)))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let Ok(count) = usize::try_from(number()?) else {
                return Ok(Some((Node::Nil, next)));
            };
            let count = if matches!(kind, b'%' | b'|') {
                count.checked_mul(2).ok_or(Malformed)?
            } else {
                count
            };
            let mut items = Vec::new();
            let mut at = next;
            for _ in 0..count {
                let Some((item, end)) = parse(buf, at, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                at = end;
            }
            let node = match kind {
                b'>' => Node::Push(items),
                b'*' | b'~' => Node::List(items),
                _ => Node::Other,
            };
            Ok(Some((node, at)))
        }
        _ => Err(Malformed),
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|pair| pair == b"\r\n")
        .map(|at| from + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_in(stream: &[u8]) -> Vec<Option<Vec<String>>> {
        let mut found = Vec::new();
        let mut at = 0;
        while let Ok(Some((node, end))) = parse(stream, at, 0) {
            if let Some(keys) = invalidated(&node, stream) {
                found.push(keys.map(|keys| {
                    keys.iter()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .collect()
                }));
            }
            at = end;
        }
        found
    }

    #[test]
    fn finds_invalidations_among_replies() {
        let stream = b"%1\r\n$6\r\nserver\r\n$5\r\nredis\r\n\
            +OK\r\n\
            $11\r\n1 {\"i\":\"x\"}\r\n\
            >2\r\n$10\r\ninvalidate\r\n*2\r\n$3\r\na:1\r\n$3\r\na:2\r\n\
            _\r\n\
            >2\r\n$10\r\ninvalidate\r\n_\r\n\
            >3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n";
        assert_eq!(
            keys_in(stream),
            vec![Some(vec!["a:1".to_owned(), "a:2".to_owned()]), None]
        );
    }

    #[test]
    fn a_frame_split_anywhere_waits_for_the_rest() {
        let frame = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\na:1\r\n";
        for cut in 0..frame.len() {
            assert!(
                matches!(parse(&frame[..cut], 0, 0), Ok(None)),
                "cut at {cut}"
            );
        }
        assert!(matches!(parse(frame, 0, 0), Ok(Some((_, end))) if end == frame.len()));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for bad in [
            &b"?what\r\n"[..],
            b"$abc\r\n",
            b"$3\r\nabcde\r\n",
            b"*99999999999999999999999\r\n",
            b"$18446744073709551615\r\nx\r\n",
        ] {
            assert!(parse(bad, 0, 0).is_err(), "{bad:?}");
        }
        let deep = "*1\r\n".repeat(64);
        assert!(parse(deep.as_bytes(), 0, 0).is_err());
    }

    #[test]
    fn the_scanner_reports_an_invalidation_once_it_is_whole() {
        let stream = b"+OK\r\n>2\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\na:1\r\n+PONG\r\n";
        let mut scanner = Scanner::default();
        let mut seen: Vec<Option<Vec<String>>> = Vec::new();
        let mut record = |keys: Option<Vec<&[u8]>>| {
            seen.push(keys.map(|keys| {
                keys.iter()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect()
            }));
        };
        let (first, rest) = stream.split_at(20);
        assert!(scanner.feed(first, &mut record).is_ok());
        assert!(!scanner.is_idle(), "half a push is waiting");
        assert!(scanner.feed(rest, &mut record).is_ok());
        assert!(scanner.is_idle());
        assert_eq!(seen, vec![Some(vec!["a:1".to_owned()])]);
    }
}
