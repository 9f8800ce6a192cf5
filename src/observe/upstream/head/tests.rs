use http::header::HOST;

use super::*;

fn parsed(bytes: &[u8], method: &Method) -> (Result<Option<Parsed>, Malformed>, BytesMut) {
    let mut buf = BytesMut::from(bytes);
    let parsed = parse(&mut buf, method);
    (parsed, buf)
}

/// The final head of `bytes`, answering a GET, and what is left after it.
fn head(bytes: &[u8]) -> (Head, BytesMut) {
    match parsed(bytes, &Method::GET) {
        (Ok(Some(Parsed::Final(head))), rest) => (head, rest),
        (other, _) => panic!("{other:?}"),
    }
}

fn malformed(bytes: &[u8]) -> Malformed {
    match parsed(bytes, &Method::GET).0 {
        Err(e) => e,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_request_head_is_its_line_then_every_header_in_order() {
    let mut headers = HeaderMap::new();
    headers.insert(HOST, HeaderValue::from_static("app:8080"));
    headers.append("x-many", HeaderValue::from_static("1"));
    headers.append("x-many", HeaderValue::from_static("2"));
    let mut out = BytesMut::new();
    encode(&Method::DELETE, "/a?b=c", &headers, &mut out);
    assert_eq!(
        &out[..],
        b"DELETE /a?b=c HTTP/1.1\r\nhost: app:8080\r\nx-many: 1\r\nx-many: 2\r\n\r\n"
    );
}

#[test]
fn a_head_comes_off_the_buffer_with_its_headers_and_the_body_stays() {
    let (head, rest) =
        head(b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\nX-Multi: a\r\nx-multi: b\r\n\r\nabc");
    assert_eq!(head.response.status(), StatusCode::CREATED);
    assert_eq!(head.response.version(), Version::HTTP_11);
    let multi: Vec<_> = head.response.headers().get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"]);
    assert_eq!(head.framing, Framing::Length(3));
    assert!(head.keep_alive);
    assert_eq!(&rest[..], b"abc");
}

#[test]
fn a_partial_head_waits_for_more_and_consumes_nothing() {
    let (parsed, rest) = parsed(b"HTTP/1.1 200 OK\r\nContent-Le", &Method::GET);
    assert!(matches!(parsed, Ok(None)), "{parsed:?}");
    assert_eq!(rest.len(), 27);
}

#[test]
fn interim_responses_are_consumed_and_the_final_one_follows() {
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
    );
    assert!(matches!(
        parse(&mut buf, &Method::GET),
        Ok(Some(Parsed::Interim))
    ));
    assert!(matches!(
        parse(&mut buf, &Method::GET),
        Ok(Some(Parsed::Final(_)))
    ));
    assert!(buf.is_empty());
}

#[test]
fn framing_follows_rfc_9112() {
    let framing = |bytes: &[u8]| head(bytes).0.framing;
    assert_eq!(
        framing(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n"),
        Framing::Chunked
    );
    assert_eq!(
        framing(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n"),
        Framing::Close
    );
    assert_eq!(framing(b"HTTP/1.1 200 OK\r\n\r\n"), Framing::Close);
    assert_eq!(
        framing(b"HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n"),
        Framing::Length(0)
    );
    assert_eq!(
        framing(b"HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n"),
        Framing::Length(0)
    );
    assert_eq!(
        framing(b"HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\ncontent-length: 7\r\n\r\n"),
        Framing::Length(7)
    );
    let answer_to_head = b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n";
    match parsed(answer_to_head, &Method::HEAD).0 {
        Ok(Some(Parsed::Final(head))) => assert_eq!(head.framing, Framing::Length(0)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn only_a_message_framed_one_clear_way_leaves_the_connection_reusable() {
    let reusable = |bytes: &[u8]| head(bytes).0.keep_alive;
    assert!(reusable(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n"));
    assert!(!reusable(b"HTTP/1.1 200 OK\r\n\r\n"), "ends at close");
    assert!(!reusable(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n"
    ));
    assert!(!reusable(
        b"HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 1\r\n\r\n"
    ));
    assert!(!reusable(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n"));
    assert!(reusable(
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n"
    ));
}

#[test]
fn heads_that_cannot_be_trusted_are_refused() {
    assert_eq!(
        malformed(b"HTTP/1.1 200 OK\r\ncontent-length: 3, 4\r\n\r\n"),
        Malformed::ContentLength
    );
    assert_eq!(
        malformed(b"HTTP/1.1 200 OK\r\ncontent-length: -3\r\n\r\n"),
        Malformed::ContentLength
    );
    assert_eq!(
        malformed(b"HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\n"),
        Malformed::ContentLength
    );
    assert_eq!(
        malformed(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
        Malformed::Switch
    );
    assert_eq!(malformed(b"SSH-2.0-OpenSSH\r\n\r\n"), Malformed::Head);
}

#[test]
fn an_http10_answer_with_a_transfer_coding_never_leaves_the_connection_reusable() {
    let wire = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert!(!head(wire).0.keep_alive);
}

#[test]
fn a_chunked_answer_loses_the_length_that_disagrees_with_it() {
    let wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n";
    let (head, _) = head(wire);
    assert_eq!(head.framing, Framing::Chunked);
    assert!(!head.response.headers().contains_key(header::CONTENT_LENGTH));
}

#[test]
fn an_uncommon_reason_phrase_is_kept_and_a_common_one_is_not() {
    let (custom, _) = head(b"HTTP/1.1 200 Alright\r\ncontent-length: 0\r\n\r\n");
    let reason = custom
        .response
        .extensions()
        .get::<hyper::ext::ReasonPhrase>();
    assert_eq!(reason.map(|r| r.as_bytes()), Some(&b"Alright"[..]));
    let (common, _) = head(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    assert!(common.response.extensions().is_empty());
}
