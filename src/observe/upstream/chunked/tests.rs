use super::*;

/// Decodes `wire` fed in pieces of `piece` bytes: the data, the trailers, and
/// whether the body ended.
fn decode(wire: &[u8], piece: usize) -> Result<(Vec<u8>, Option<HeaderMap>, bool), BadChunk> {
    let mut decoder = Chunked::default();
    let mut buf = BytesMut::new();
    let (mut data, mut trailers) = (Vec::new(), None);
    let mut fed = 0;
    loop {
        match decoder.step(&mut buf)? {
            Step::Frame(frame) => match frame.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(frame) => trailers = frame.into_trailers().ok(),
            },
            Step::End => return Ok((data, trailers, true)),
            Step::More if fed == wire.len() => return Ok((data, trailers, false)),
            Step::More => {
                let end = (fed + piece).min(wire.len());
                buf.extend_from_slice(&wire[fed..end]);
                fed = end;
            }
        }
        if decoder == Chunked::Done && trailers.is_some() {
            return Ok((data, trailers, true));
        }
    }
}

const WIRE: &[u8] = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-sum: 42\r\n\r\n";

#[test]
fn data_and_trailers_come_out_whole_however_the_bytes_arrive() {
    for piece in [1, 2, 3, 7, WIRE.len()] {
        let (data, trailers, ended) = decode(WIRE, piece).unwrap();
        assert_eq!(data, b"hello, world", "piece {piece}");
        assert_eq!(trailers.unwrap()["x-sum"], "42", "piece {piece}");
        assert!(ended);
    }
}

#[test]
fn a_body_without_trailers_ends_at_its_empty_line() {
    let (data, trailers, ended) = decode(b"3\r\nabc\r\n0\r\n\r\n", 2).unwrap();
    assert_eq!(
        (data.as_slice(), trailers, ended),
        (&b"abc"[..], None, true)
    );
}

#[test]
fn a_body_cut_short_has_not_ended() {
    let (data, _, ended) = decode(b"a\r\n01234", 100).unwrap();
    assert_eq!((data.as_slice(), ended), (&b"01234"[..], false));
}

#[test]
fn malformed_chunks_are_refused() {
    assert_eq!(decode(b"zz\r\n", 100), Err(BadChunk));
    assert_eq!(decode(b"3\r\nabcXY0\r\n\r\n", 100), Err(BadChunk));
}

#[test]
fn size_lines_and_trailers_are_bounded() {
    let mut long = b"1;".to_vec();
    long.resize(MAX_SIZE_LINE + 1, b'x');
    assert_eq!(decode(&long, 1024), Err(BadChunk));
    let mut trailers = b"0\r\nx-t: ".to_vec();
    trailers.resize(MAX_TRAILERS + 10, b'a');
    assert_eq!(decode(&trailers, 8192), Err(BadChunk));
}

#[test]
fn a_chunk_size_line_without_digits_is_refused() {
    for wire in [&b"\r\n\r\n"[..], b";ext\r\n\r\n", b"2\r\nok\r\n\r\n\r\n"] {
        let got = decode(wire, wire.len());
        assert_eq!(got, Err(BadChunk), "{:?}", String::from_utf8_lossy(wire));
    }
}
