//! The chunked transfer coding of a response body (RFC 9112 §7.1), decoded
//! from the bytes a link has read.
//!
//! Design rule: data leaves as slices of the read buffer, never copied; a
//! chunk-size line and the trailer section are bounded, so an app cannot make
//! the guard buffer without end.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;

#[cfg(test)]
mod tests;

/// Longest chunk-size line, extensions included.
const MAX_SIZE_LINE: usize = 4096;
/// Largest trailer section.
const MAX_TRAILERS: usize = 64 * 1024;
/// Most trailer fields.
const MAX_TRAILER_FIELDS: usize = 100;

/// Why a chunked body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the app's chunked response body is malformed")]
pub struct BadChunk;

/// Where the decoder is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Chunked {
    /// Before a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data, with this many bytes to come.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
    /// The body ended.
    Done,
}

/// What one step of decoding gave.
#[derive(Debug)]
pub(super) enum Step {
    /// A frame of the body.
    Frame(Frame<Bytes>),
    /// The body ended.
    End,
    /// More bytes are needed.
    More,
}

impl Chunked {
    /// Decodes from the front of `buf`, consuming what it used.
    pub(super) fn step(&mut self, buf: &mut BytesMut) -> Result<Step, BadChunk> {
        loop {
            match *self {
                Chunked::Size => {
                    // At least one digit: httparse reads an empty size as 0,
                    // the last chunk (RFC 9112 §7.1: `1*HEXDIG`).
                    if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
                        return Err(BadChunk);
                    }
                    let size = match httparse::parse_chunk_size(buf) {
                        Ok(httparse::Status::Complete((used, size))) => {
                            buf.advance(used);
                            size
                        }
                        Ok(httparse::Status::Partial) if buf.len() < MAX_SIZE_LINE => {
                            return Ok(Step::More)
                        }
                        _ => return Err(BadChunk),
                    };
                    *self = if size == 0 {
                        Chunked::Trailers
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let take = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                    let left = left - take as u64;
                    *self = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Step::Frame(Frame::data(buf.split_to(take).freeze())));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BadChunk);
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] == b"\r\n" {
                        buf.advance(2);
                        *self = Chunked::Done;
                        return Ok(Step::End);
                    }
                    return match trailers(buf)? {
                        Some(map) => {
                            *self = Chunked::Done;
                            Ok(Step::Frame(Frame::trailers(map)))
                        }
                        None => Ok(Step::More),
                    };
                }
                Chunked::Done => return Ok(Step::End),
            }
        }
    }
}

/// The trailer section at the front of `buf`, consumed, once it is whole.
fn trailers(buf: &mut BytesMut) -> Result<Option<HeaderMap>, BadChunk> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
    let (used, map) = match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((used, parsed))) => {
            let mut map = HeaderMap::with_capacity(parsed.len());
            for f in parsed {
                let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| BadChunk)?;
                let value = HeaderValue::from_bytes(f.value).map_err(|_| BadChunk)?;
                map.append(name, value);
            }
            (used, map)
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_TRAILERS => return Ok(None),
        _ => return Err(BadChunk),
    };
    buf.advance(used);
    Ok(Some(map))
}
