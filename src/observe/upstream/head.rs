//! The heads of HTTP/1.1 messages on an upstream link: the request's written,
//! the response's parsed, and how the response's body is framed (RFC 9112 §6.3).
//!
//! Design rule: pure functions over bytes, no I/O. Anything this does not
//! understand is an error, never a guess: a response framed two ways, a
//! `Content-Length` that does not parse, a switch of protocols nobody asked for.

use std::mem::MaybeUninit;

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};

#[cfg(test)]
mod tests;

/// Most header fields a response head may carry (hyper's default too).
const MAX_HEADERS: usize = 100;
/// Largest response head: hyper's client gave up at the same size.
pub(super) const MAX_HEAD: usize = 8192 + 4096 * 100;

/// Why a response head was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("the app's response head does not parse as HTTP/1.1")]
    Head,
    #[error("the app's response has an invalid Content-Length")]
    ContentLength,
    #[error("the app switched protocols though the request did not ask to")]
    Switch,
    #[error("the app's response head is larger than {MAX_HEAD} bytes")]
    TooLarge,
}

/// How a response body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// After this many bytes.
    Length(u64),
    /// With its last chunk.
    Chunked,
    /// When the app closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) response: Response<()>,
    pub(super) framing: Framing,
    /// The connection may serve another request once this body ends.
    pub(super) keep_alive: bool,
}

/// Appends the request head: `method target HTTP/1.1`, then every header. The
/// request has no body, so no framing header is added.
pub(super) fn encode(method: &Method, target: &str, headers: &HeaderMap, out: &mut BytesMut) {
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}

/// What the front of the bytes read held.
#[derive(Debug)]
pub(super) enum Parsed {
    /// An interim (1xx) response, consumed: the final one follows.
    Interim,
    /// A final response head, consumed.
    Final(Head),
}

/// Parses the response head at the front of `buf`, answering a request of
/// `method`, and takes it off `buf`; `None` until the head is whole. Header
/// values are slices of the head's bytes, not copies.
pub(super) fn parse(buf: &mut BytesMut, method: &Method) -> Result<Option<Parsed>, Malformed> {
    // Uninitialised: filling a hundred empty headers cost more than parsing.
    let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut parsed, buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(Malformed::TooLarge),
        Err(_) => return Err(Malformed::Head),
    };
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(Malformed::Head)?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(Malformed::Switch);
    }
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    // An uncommon reason phrase goes on to the client, as hyper's client kept it.
    let reason = parsed
        .reason
        .filter(|r| Some(*r) != status.canonical_reason())
        .and_then(|r| hyper::ext::ReasonPhrase::try_from(r.as_bytes()).ok());
    // Where each value is in the head, to slice it once the head is split off.
    // A list, not an array on the stack: zeroing room for a hundred fields
    // cost more than the allocation (callgrind).
    let base = buf.as_ptr() as usize;
    let mut fields = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| Malformed::Head)?;
        let start = h.value.as_ptr() as usize - base;
        fields.push((name, start, start + h.value.len()));
    }
    let head = buf.split_to(len).freeze();
    if status.is_informational() {
        return Ok(Some(Parsed::Interim));
    }
    let mut map = HeaderMap::with_capacity(fields.len());
    for (name, start, end) in fields {
        let value =
            HeaderValue::from_maybe_shared(head.slice(start..end)).map_err(|_| Malformed::Head)?;
        map.append(name, value);
    }
    let (framing, mut keep_alive) = framing(status, method, &map)?;
    keep_alive &= match version {
        Version::HTTP_11 => !crate::server::connection_lists(&map, "close"),
        // HTTP/1.0 knows no transfer coding: framing it with one is faulty.
        _ => {
            crate::server::connection_lists(&map, "keep-alive")
                && !map.contains_key(header::TRANSFER_ENCODING)
        }
    };
    if framing == Framing::Chunked {
        // The coding decides, and a proxy forwards no length that disagrees
        // with it (RFC 9112 §6.3).
        map.remove(header::CONTENT_LENGTH);
    }
    let mut response = Response::new(());
    if let Some(reason) = reason {
        response.extensions_mut().insert(reason);
    }
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = map;
    Ok(Some(Parsed::Final(Head {
        response,
        framing,
        keep_alive,
    })))
}

/// How the body is framed, and whether the connection can be reused after
/// it as far as framing goes (RFC 9112 §6.3).
fn framing(
    status: StatusCode,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(Framing, bool), Malformed> {
    if method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Length(0), true));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|c| !c.is_empty());
        let chunked = last.is_some_and(|c| c.eq_ignore_ascii_case("chunked"));
        // Framed two ways, the connection is not trusted again.
        let reusable = !headers.contains_key(header::CONTENT_LENGTH);
        return Ok(if chunked {
            (Framing::Chunked, reusable)
        } else {
            (Framing::Close, false)
        });
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let value = value.to_str().map_err(|_| Malformed::ContentLength)?;
        for part in value.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Malformed::ContentLength);
            }
            let n: u64 = part.parse().map_err(|_| Malformed::ContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(Malformed::ContentLength);
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), true),
        None => (Framing::Close, false),
    })
}
