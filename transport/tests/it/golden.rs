//! Golden bytes: the wire format may not change by accident. A failure here
//! means peers built from an older commit can no longer talk to this one:
//! bump `PROTOCOL_VERSION` and update `PROTOCOL.md` before updating a pin.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Encoder;
use transport::frame::{FrameCodec, Header, Kind};
use transport::handshake::{Hello, HelloReply, MAGIC};
use transport::{Lane, NodeId, PROTOCOL_VERSION};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A handshake message as a whole frame (length prefix included).
fn handshake_frame<T: serde::Serialize>(msg: &T) -> String {
    let mut buf = BytesMut::new();
    FrameCodec::new(1 << 20)
        .encode(Bytes::from(postcard::to_allocvec(msg).unwrap()), &mut buf)
        .unwrap();
    hex(&buf)
}

fn data_frame(channel: u8, kind: Kind, body: &[u8]) -> String {
    let mut buf = BytesMut::new();
    Header { channel, kind }
        .encode_frame(body, 1 << 20, &mut buf)
        .unwrap();
    hex(&buf)
}

#[test]
fn protocol_constants() {
    assert_eq!(&MAGIC, b"CSTY");
    assert_eq!(PROTOCOL_VERSION, 4);
}

#[test]
fn hello_frame_is_pinned() {
    let hello = Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        cluster: "casty".into(),
        from: NodeId {
            name: "node-1".into(),
            addr: "node-1:25520".into(),
            generation: 1_700_000_000_000,
        },
        lane: Lane::Control,
        settings: "num_shards=50".into(),
    };
    assert_eq!(
        handshake_frame(&hello),
        concat!(
            "00000034", // length 52
            "43535459", // magic "CSTY"
            "04",       // version 4
            "05",
            "6361737479", // cluster "casty"
            "06",
            "6e6f64652d31", // name "node-1"
            "0c",
            "6e6f64652d313a3235353230", // addr "node-1:25520"
            "80d095ffbc31",             // generation 1_700_000_000_000 (varint)
            "00",                       // lane Control
            "0d",
            "6e756d5f7368617264733d3530", // settings "num_shards=50"
        )
    );
    let bulk = Hello {
        lane: Lane::Bulk,
        ..hello
    };
    assert!(handshake_frame(&bulk).ends_with("80d095ffbc31010d6e756d5f7368617264733d3530"));
}

#[test]
fn hello_replies_are_pinned() {
    let accepted = HelloReply::Accepted {
        node: NodeId {
            name: "node-2".into(),
            addr: "node-2:25520".into(),
            generation: 1_700_000_000_001,
        },
    };
    assert_eq!(
        handshake_frame(&accepted),
        "0000001b00066e6f64652d320c6e6f64652d323a323535323081d095ffbc31"
    );
    let refused = HelloReply::Refused {
        reason: r#"cluster name "x" does not match"#.into(),
    };
    assert_eq!(
        handshake_frame(&refused),
        "00000021011f636c7573746572206e616d652022782220646f6573206e6f74206d61746368"
    );
    let mismatch = HelloReply::Mismatch {
        reason: r#"cluster name "x" does not match"#.into(),
    };
    assert_eq!(
        handshake_frame(&mismatch),
        "00000021021f636c7573746572206e616d652022782220646f6573206e6f74206d61746368"
    );
}

#[test]
fn data_frames_are_pinned() {
    // length (4 bytes), channel, kind tag, [correlation id varint], message
    assert_eq!(
        data_frame(1, Kind::Tell, b"hi"),
        concat!("00000004", "01", "00", "6869")
    );
    assert_eq!(
        data_frame(2, Kind::Ask { corr: 300 }, b"q"),
        concat!("00000005", "02", "01", "ac02", "71")
    );
    assert_eq!(
        data_frame(2, Kind::Reply { corr: 300 }, b"a"),
        concat!("00000005", "02", "02", "ac02", "61")
    );
    assert_eq!(
        data_frame(7, Kind::Reject { corr: 1 }, b"no"),
        concat!("00000005", "07", "03", "01", "6e6f")
    );
    assert_eq!(
        data_frame(0, Kind::Ask { corr: u64::MAX }, b""),
        concat!("0000000c", "00", "01", "ffffffffffffffffff01")
    );
}
