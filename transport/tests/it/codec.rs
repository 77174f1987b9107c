//! Property tests of the wire format: round trips, and the decoders'
//! behaviour on arbitrary bytes (never a panic, never a buffer beyond one
//! maximal frame).

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use tokio_util::codec::Decoder;
use transport::frame::{
    FrameCodec, FrameReader, Header, Kind, LENGTH_PREFIX_BYTES, MAX_HEADER_BYTES, READ_CHUNK_BYTES,
    frames_in,
};
use transport::handshake::{Hello, HelloReply};
use transport::{Lane, NodeId};

/// A message type with the shapes upper layers use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Wire {
    Unit,
    Num(u64, i32, u8),
    Text { name: String, tags: Vec<String> },
    Blob(Vec<u8>),
    Nested(Option<Box<Wire>>, Vec<(u16, bool)>),
    Float(f64),
}

fn wire() -> impl Strategy<Value = Wire> {
    let leaf = prop_oneof![
        Just(Wire::Unit),
        (any::<u64>(), any::<i32>(), any::<u8>()).prop_map(|(a, b, c)| Wire::Num(a, b, c)),
        (".{0,40}", prop::collection::vec(".{0,8}", 0..5))
            .prop_map(|(name, tags)| Wire::Text { name, tags }),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(Wire::Blob),
        any::<f64>()
            .prop_filter("NaN is not equal to itself", |f| !f.is_nan())
            .prop_map(Wire::Float),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        (
            prop::option::of(inner.prop_map(Box::new)),
            prop::collection::vec((any::<u16>(), any::<bool>()), 0..4),
        )
            .prop_map(|(a, b)| Wire::Nested(a, b))
    })
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Tell),
        any::<u64>().prop_map(|corr| Kind::Ask { corr }),
        any::<u64>().prop_map(|corr| Kind::Reply { corr }),
        any::<u64>().prop_map(|corr| Kind::Reject { corr }),
    ]
}

fn header() -> impl Strategy<Value = Header> {
    (any::<u8>(), kind()).prop_map(|(channel, kind)| Header { channel, kind })
}

fn node_id() -> impl Strategy<Value = NodeId> {
    (".{0,20}", ".{0,30}", any::<u64>()).prop_map(|(name, addr, generation)| NodeId {
        name,
        addr,
        generation,
    })
}

fn lane() -> impl Strategy<Value = Lane> {
    prop_oneof![Just(Lane::Control), Just(Lane::Bulk)]
}

/// Splits `bytes` at the given (sorted, deduplicated) cut points.
fn pieces(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts.into_iter().chain([bytes.len()]) {
        out.push(bytes[at..c].to_vec());
        at = c;
    }
    out
}

/// Everything a [`FrameReader`] returns for `stream` fed in `pieces`,
/// checking the buffer bound after every step.
fn read_all(max: usize, stream: &[u8], cuts: &[usize]) -> (Vec<Bytes>, bool) {
    let bound = READ_CHUNK_BYTES.max(LENGTH_PREFIX_BYTES + max);
    let mut reader = FrameReader::new(max);
    let mut frames = Vec::new();
    for piece in pieces(stream, cuts) {
        let mut rest = &piece[..];
        while !rest.is_empty() {
            let n = reader.feed(rest);
            rest = &rest[n..];
            assert!(
                reader.capacity() <= bound,
                "buffer grew to {} (bound {bound})",
                reader.capacity()
            );
            loop {
                match reader.next_frames() {
                    Ok(Some(region)) => {
                        frames.extend(frames_in(&region).map(|r| region.slice(r)));
                    }
                    Ok(None) => break,
                    Err(_) => return (frames, true),
                }
                assert!(reader.capacity() <= bound);
            }
        }
    }
    (frames, false)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn header_encoding_is_postcards(h in header()) {
        let mut out = [0u8; MAX_HEADER_BYTES];
        let n = h.encode(&mut out);
        let expected = postcard::to_allocvec(&h).unwrap();
        prop_assert_eq!(&out[..n], &expected[..]);
        prop_assert_eq!(Header::decode(&expected).unwrap(), (h, n));
    }

    #[test]
    fn header_decode_agrees_with_postcard_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..16)) {
        let ours = Header::decode(&bytes).ok();
        let theirs = postcard::take_from_bytes::<Header>(&bytes)
            .ok()
            .map(|(h, rest)| (h, bytes.len() - rest.len()));
        prop_assert_eq!(ours, theirs);
    }

    #[test]
    fn messages_round_trip_through_frames(
        msgs in prop::collection::vec((header(), wire()), 1..20),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let max = 1 << 20;
        let mut stream = BytesMut::new();
        for (h, m) in &msgs {
            h.encode_frame(&postcard::to_allocvec(m).unwrap(), max, &mut stream).unwrap();
        }
        let (frames, failed) = read_all(max, &stream, &cuts);
        prop_assert!(!failed);
        prop_assert_eq!(frames.len(), msgs.len());
        for (frame, (h, m)) in frames.into_iter().zip(&msgs) {
            let (h2, body) = Header::decode_frame(frame).unwrap();
            prop_assert_eq!(h2, *h);
            prop_assert_eq!(&postcard::from_bytes::<Wire>(&body).unwrap(), m);
        }
    }

    #[test]
    fn codec_round_trips_in_any_pieces(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..2000), 1..10),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut codec = FrameCodec::new(4096);
        let mut stream = BytesMut::new();
        for b in &bodies {
            tokio_util::codec::Encoder::encode(&mut codec, Bytes::from(b.clone()), &mut stream).unwrap();
        }
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in pieces(&stream, &cuts) {
            buf.extend_from_slice(&piece);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                got.push(f.to_vec());
            }
        }
        prop_assert!(codec.decode_eof(&mut buf).unwrap().is_none());
        prop_assert_eq!(got, bodies);
    }

    #[test]
    fn handshake_round_trips(
        magic in any::<[u8; 4]>(),
        version in any::<u16>(),
        cluster in ".{0,20}",
        settings in ".{0,20}",
        from in node_id(),
        lane in lane(),
        node in node_id(),
        reason in ".{0,40}",
    ) {
        let hello = Hello { magic: *b"CSTY", version, cluster, from, lane, settings };
        let body = postcard::to_allocvec(&hello).unwrap();
        prop_assert_eq!(Hello::decode(&body).unwrap(), hello.clone());
        let other = Hello { magic, ..hello };
        let body = postcard::to_allocvec(&other).unwrap();
        prop_assert_eq!(Hello::decode(&body).is_ok(), magic == *b"CSTY");
        for reply in [
            HelloReply::Accepted { node },
            HelloReply::Refused { reason: reason.clone() },
            HelloReply::Mismatch { reason },
        ] {
            let body = postcard::to_allocvec(&reply).unwrap();
            prop_assert_eq!(HelloReply::decode(&body).unwrap(), reply);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary bytes, in arbitrary pieces, through the post-handshake
    /// reader: no panic, and the buffer never exceeds one maximal frame.
    #[test]
    fn reader_survives_arbitrary_bytes(
        max in 1024usize..100_000,
        bytes in prop::collection::vec(any::<u8>(), 0..20_000),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
        small_prefix in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if small_prefix && bytes.len() >= 4 {
            // Make the first length plausible so frames get decoded too.
            bytes[0] = 0;
            bytes[1] = 0;
        }
        let (frames, _) = read_all(max, &bytes, &cuts);
        for f in frames {
            prop_assert!(f.len() <= max);
            let _ = Header::decode_frame(f);
        }
    }

    /// Arbitrary bytes through the tokio-util codec: no panic, and a
    /// decode call never grows the buffer past one maximal frame.
    #[test]
    fn codec_survives_arbitrary_bytes(
        max in 1024usize..100_000,
        bytes in prop::collection::vec(any::<u8>(), 0..20_000),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut codec = FrameCodec::new(max);
        let mut buf = BytesMut::new();
        'feed: for piece in pieces(&bytes, &cuts) {
            buf.extend_from_slice(&piece);
            loop {
                let before = buf.capacity();
                match codec.decode(&mut buf) {
                    Ok(Some(f)) => prop_assert!(f.len() <= max),
                    Ok(None) => {
                        prop_assert!(buf.capacity() <= before.max(LENGTH_PREFIX_BYTES + max));
                        break;
                    }
                    Err(_) => break 'feed,
                }
            }
        }
    }

    /// Arbitrary bytes as a handshake body or header: errors, never panics.
    #[test]
    fn handshake_decoders_survive_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        magic_first in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if magic_first && bytes.len() >= 4 {
            bytes[..4].copy_from_slice(b"CSTY");
        }
        let _ = Hello::decode(&bytes);
        let _ = HelloReply::decode(&bytes);
        let _ = Header::decode(&bytes);
    }
}

#[test]
fn an_oversized_prefix_is_refused_before_anything_is_allocated() {
    let mut reader = FrameReader::new(1024);
    reader.feed(&[0, 0, 4, 1]);
    let cap = reader.capacity();
    assert!(matches!(
        reader.next_frames(),
        Err(transport::FrameError::TooLarge {
            len: 1025,
            max: 1024
        })
    ));
    assert_eq!(reader.capacity(), cap);
}

#[test]
fn a_frame_header_encodes_at_most_max_header_bytes() {
    let h = Header {
        channel: 255,
        kind: Kind::Reject { corr: u64::MAX },
    };
    let mut out = [0u8; MAX_HEADER_BYTES];
    assert_eq!(h.encode(&mut out), 12);
}
