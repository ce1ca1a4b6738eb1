//! The wire codec: round trips, malformed input, frame limits.

use crate::journal::raft::codec::*;
use crate::journal::raft::message::*;
use crate::journal::raft::{Entry, EntryKind, Membership, SnapshotMeta};
use crate::util::rng::Rng;

fn membership() -> Membership {
    Membership::new([1, 2, 3], [9])
}

/// One message of every kind, with edge values.
fn samples() -> Vec<Message> {
    let entry = |index, kind, data: &[u8]| Entry {
        index,
        term: 7,
        kind,
        data: data.to_vec(),
    };
    let vote = VoteRequest {
        last_index: 10,
        last_term: 3,
        transfer: true,
    };
    let bodies = vec![
        MessageBody::PreVote(vote),
        MessageBody::PreVoteResponse(VoteResponse { granted: true }),
        MessageBody::Vote(VoteRequest {
            transfer: false,
            ..vote
        }),
        MessageBody::VoteResponse(VoteResponse { granted: false }),
        MessageBody::Append(AppendRequest {
            prev_index: 4,
            prev_term: 6,
            commit: 3,
            entries: vec![
                entry(5, EntryKind::Normal, b"hello"),
                entry(6, EntryKind::Noop, b""),
                entry(7, EntryKind::Membership, &membership().encode()),
            ],
        }),
        MessageBody::Append(AppendRequest {
            prev_index: 0,
            prev_term: 0,
            commit: 0,
            entries: vec![],
        }),
        MessageBody::AppendResponse(AppendResponse::Accepted {
            match_index: u64::MAX,
        }),
        MessageBody::AppendResponse(AppendResponse::Rejected {
            prev_index: 9,
            hint: RejectHint::LogTooShort { last_index: 2 },
        }),
        MessageBody::AppendResponse(AppendResponse::Rejected {
            prev_index: 9,
            hint: RejectHint::Conflict {
                term: 4,
                first_index: 6,
            },
        }),
        MessageBody::Heartbeat(Heartbeat {
            commit: 12,
            read_ctx: 99,
        }),
        MessageBody::HeartbeatResponse(HeartbeatResponse { read_ctx: 99 }),
        MessageBody::InstallSnapshot(SnapshotChunk {
            meta: SnapshotMeta {
                index: 100,
                term: 5,
                membership: membership(),
            },
            total_len: 10,
            offset: 4,
            data: vec![1, 2, 3],
            done: false,
        }),
        MessageBody::InstallSnapshotResponse(SnapshotResponse {
            snapshot_index: 100,
            installed: false,
            next_offset: 7,
        }),
        MessageBody::ReadIndex(ReadIndexRequest { request_id: 42 }),
        MessageBody::ReadIndexResponse(ReadIndexResponse {
            request_id: 42,
            index: Some(17),
        }),
        MessageBody::ReadIndexResponse(ReadIndexResponse {
            request_id: 43,
            index: None,
        }),
        MessageBody::TimeoutNow,
    ];
    bodies
        .into_iter()
        .map(|body| Message {
            from: 3,
            term: 8,
            body,
        })
        .collect()
}

#[test]
fn codec_round_trips_every_message() {
    for m in samples() {
        let bytes = encode_message(&m);
        assert_eq!(decode_message(&bytes), Ok(m.clone()), "{}", m.body.name());
        let frame = encode_message_frame(&m);
        let hello = Hello {
            version: PROTOCOL_VERSION,
            from: 3,
            cluster: "hpc-α".into(),
        };
        let mut stream = encode_hello_frame(&hello);
        stream.extend_from_slice(&frame);
        let frames = decode_frame_stream(&stream, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(frames, vec![PeerFrame::Hello(hello), PeerFrame::Raft(m)]);
    }
    let m = membership();
    assert_eq!(Membership::decode(&m.encode()), Ok(m));
    let e = Entry {
        index: 3,
        term: 2,
        kind: EntryKind::Noop,
        data: vec![],
    };
    assert_eq!(decode_entry(&encode_entry(&e)), Ok(e));
}

#[test]
fn codec_rejects_every_truncation_and_extension() {
    for m in samples() {
        let bytes = encode_message(&m);
        for cut in 0..bytes.len() {
            assert!(
                decode_message(&bytes[..cut]).is_err(),
                "{} cut at {cut}",
                m.body.name()
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_message(&longer), Err(DecodeError::TrailingBytes));
    }
}

#[test]
fn codec_survives_garbage_and_bit_flips() {
    let mut rng = Rng::new(99);
    let samples = samples();
    for i in 0..20_000 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            let len = rng.range(0, 64) as usize;
            (0..len).map(|_| rng.next_u64() as u8).collect()
        } else {
            let m = &samples[rng.range(0, samples.len() as u64) as usize];
            let mut b = encode_message(m);
            for _ in 0..rng.range(1, 4) {
                let at = rng.range(0, b.len() as u64) as usize;
                b[at] ^= 1 << rng.range(0, 8);
            }
            b
        };
        // Must return, never panic; whatever decodes re-encodes exactly.
        if let Ok(m) = decode_message(&bytes) {
            assert_eq!(encode_message(&m), bytes, "decoding is canonical");
        }
        let _ = decode_frame_stream(&bytes, 1 << 10);
        let _ = Membership::decode(&bytes);
        let _ = decode_entry(&bytes);
    }
}

#[test]
fn codec_rejects_malformed_values() {
    let header = |tag: u8| {
        let mut b = Vec::new();
        b.extend_from_slice(&1u64.to_be_bytes());
        b.extend_from_slice(&2u64.to_be_bytes());
        b.push(tag);
        b
    };
    // Unknown message tag.
    assert!(matches!(
        decode_message(&header(200)),
        Err(DecodeError::UnknownTag { .. })
    ));
    // A bool that is neither 0 nor 1.
    let mut b = header(2);
    b.push(2);
    assert!(matches!(
        decode_message(&b),
        Err(DecodeError::UnknownTag { .. })
    ));
    // An append announcing 4 billion entries in a few bytes: refused
    // before any allocation.
    let mut b = header(5);
    b.extend_from_slice(&[0; 24]);
    b.extend_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(decode_message(&b), Err(DecodeError::Truncated));
    // An entry announcing more data than there is.
    let mut b = header(5);
    b.extend_from_slice(&[0; 24]);
    b.extend_from_slice(&1u32.to_be_bytes());
    b.extend_from_slice(&[0; 17]);
    b.extend_from_slice(&u32::MAX.to_be_bytes());
    b.extend_from_slice(&[0; 30]);
    assert_eq!(decode_message(&b), Err(DecodeError::Truncated));
    // Membership entries must hold a valid membership.
    let bad = Entry {
        index: 1,
        term: 1,
        kind: EntryKind::Membership,
        data: vec![0, 0, 0, 0],
    };
    assert!(decode_entry(&encode_entry(&bad)).is_err(), "no voters");
    let unsorted = {
        let mut d = 2u32.to_be_bytes().to_vec();
        d.extend_from_slice(&5u64.to_be_bytes());
        d.extend_from_slice(&4u64.to_be_bytes());
        d.extend_from_slice(&0u32.to_be_bytes());
        d
    };
    assert!(Membership::decode(&unsorted).is_err(), "ids must ascend");
    let overlap = Membership::new([1, 2], [2]);
    assert!(Membership::decode(&overlap.encode()).is_err());
}

#[test]
fn frame_decoder_handles_any_chunking() {
    let hello = Hello {
        version: 1,
        from: 2,
        cluster: "c".into(),
    };
    let mut stream = encode_hello_frame(&hello);
    let msgs = samples();
    for m in &msgs {
        stream.extend_from_slice(&encode_message_frame(m));
    }
    let whole = decode_frame_stream(&stream, DEFAULT_MAX_FRAME).unwrap();
    assert_eq!(whole.len(), msgs.len() + 1);
    let mut rng = Rng::new(5);
    for _ in 0..50 {
        let mut peer = PeerStream::new(DEFAULT_MAX_FRAME);
        let mut got = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let n = (rng.range(1, 40) as usize).min(rest.len());
            peer.feed(&rest[..n]).unwrap();
            rest = &rest[n..];
            while let Some(f) = peer.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, whole);
    }
    // A trailing partial frame is just pending.
    let partial = decode_frame_stream(&stream[..stream.len() - 1], DEFAULT_MAX_FRAME).unwrap();
    assert_eq!(partial.len(), msgs.len());
}

#[test]
fn frame_size_limit_is_enforced_before_buffering() {
    // A 4 GiB announcement fails on its 4 header bytes.
    let mut dec = FrameDecoder::new(1 << 20);
    assert_eq!(
        dec.feed(&u32::MAX.to_be_bytes()),
        Err(DecodeError::FrameTooLarge {
            len: u32::MAX as usize,
            max: 1 << 20
        })
    );
    // And the decoder stays failed, buffering nothing more.
    assert!(dec.feed(&[0; 1000]).is_err());
    assert!(dec.next_frame().is_err());
    assert_eq!(dec.buffered(), 0);
    // Exactly the maximum is accepted; one more is not.
    let body = vec![7u8; 99];
    let mut ok = Vec::new();
    put_frame(&mut ok, 9, &body);
    let mut dec = FrameDecoder::new(100);
    dec.feed(&ok).unwrap();
    assert_eq!(dec.next_frame().unwrap(), Some(Frame { kind: 9, body }));
    let mut too_big = Vec::new();
    put_frame(&mut too_big, 9, &[0; 100]);
    let mut dec = FrameDecoder::new(100);
    assert!(matches!(
        dec.feed(&too_big[..4]),
        Err(DecodeError::FrameTooLarge { len: 101, .. })
    ));
    // Zero-length frames have no type byte.
    assert_eq!(
        FrameDecoder::new(100).feed(&[0, 0, 0, 0]),
        Err(DecodeError::EmptyFrame)
    );
    assert_eq!(
        decode_frame_stream(&too_big, 100),
        Err(DecodeError::FrameTooLarge { len: 101, max: 100 })
    );
}

#[test]
fn peer_stream_requires_one_hello_first() {
    let hello = encode_hello_frame(&Hello {
        version: 1,
        from: 2,
        cluster: "c".into(),
    });
    let msg = encode_message_frame(&samples()[0]);
    assert_eq!(
        decode_frame_stream(&msg, 1 << 20),
        Err(DecodeError::ExpectedHello)
    );
    let twice = [hello.clone(), hello.clone()].concat();
    assert_eq!(
        decode_frame_stream(&twice, 1 << 20),
        Err(DecodeError::UnexpectedHello)
    );
    let mut unknown = hello.clone();
    put_frame(&mut unknown, 77, b"?");
    assert!(matches!(
        decode_frame_stream(&unknown, 1 << 20),
        Err(DecodeError::UnknownTag { .. })
    ));
    // A cluster name that is not UTF-8.
    let mut bad = Vec::new();
    put_frame(
        &mut bad,
        FRAME_HELLO,
        &[0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0xff],
    );
    assert!(matches!(
        decode_frame_stream(&bad, 1 << 20),
        Err(DecodeError::Invalid(_))
    ));
}
