//! The wire and replication formats (postcard): pinned bytes, round trips,
//! and decoding arbitrary bytes never panics.

use std::collections::BTreeMap;
use std::fmt::Debug;

use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use taskqueue::{
    BarrierEntity, BarrierMsg, BarrierReply, FinalReport, JobOutput, ReportEntity, ReportMsg,
    ReportReply, ShortDigest, TaskEntity, TaskMsg, TaskReply, TaskState, TaskStatus,
    ValidationError,
};

use crate::deliver;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn encoded<T: Serialize>(value: &T) -> String {
    hex(&postcard::to_allocvec(value).unwrap())
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let bytes = postcard::to_allocvec(value).unwrap();
    let back: T = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(&back, value);
}

/// A completed task for "hello" x2 computed on "n1".
fn completed_task() -> TaskEntity {
    let mut state = None;
    let (_, jobs) = deliver(
        "n1",
        "t",
        &mut state,
        TaskMsg::Submit {
            payload: "hello".into(),
            iterations: 2,
        },
    );
    for job in jobs {
        deliver("n1", "t", &mut state, job.run());
    }
    state.unwrap()
}

/// Every message's encoding, pinned: a change here breaks mixed-version
/// clusters and must come with a new protocol version.
#[test]
fn encodings_are_pinned() {
    let cases: Vec<(String, &str)> = vec![
        (
            encoded(&TaskMsg::Submit {
                payload: "hi".into(),
                iterations: 500,
            }),
            "00026869f403",
        ),
        (encoded(&TaskMsg::Get), "01"),
        (encoded(&TaskMsg::WaitResult), "02"),
        (
            encoded(&TaskMsg::Completed {
                result: "9595c9df90075148".into(),
                processed_by: "n1".into(),
            }),
            "031039353935633964663930303735313438026e31",
        ),
        (
            encoded(&TaskMsg::SubmitAndWait {
                payload: "hi".into(),
                iterations: 500,
            }),
            "04026869f403",
        ),
        (
            // The input digest, from Python: hashlib.sha256((500).to_bytes(4,
            // 'little') + hashlib.sha256(b'hi').digest()).hexdigest()[:32].
            encoded(&TaskMsg::Computed(JobOutput::new(
                "hi",
                500,
                ShortDigest([0x95, 0x95, 0xc9, 0xdf, 0x90, 0x07, 0x51, 0x48]),
                "n1",
            ))),
            "059595c9df90075148026e312ea6130e719689249bcaae779600dcf4",
        ),
        (encoded(&TaskReply::Accepted), "00"),
        (
            encoded(&TaskReply::Status(TaskStatus {
                id: "t".into(),
                status: TaskState::Completed,
                result: Some("9595c9df90075148".into()),
                processed_by: Some("n1".into()),
            })),
            "0101740101103935393563396466393030373531343801026e31",
        ),
        (
            encoded(&TaskReply::Status(TaskStatus {
                id: "t".into(),
                status: TaskState::Pending,
                result: None,
                processed_by: None,
            })),
            "010174000000",
        ),
        (encoded(&TaskReply::NotFound), "02"),
        (
            encoded(&TaskReply::Conflict {
                existing: TaskState::Completed,
            }),
            "0301",
        ),
        (
            encoded(&TaskReply::Invalid(ValidationError::EmptyTaskId)),
            "0400",
        ),
        (
            encoded(&TaskReply::Invalid(ValidationError::TaskIdTooLong {
                len_bytes: 300,
                max_bytes: 256,
            })),
            "0401ac028002",
        ),
        (
            encoded(&TaskReply::Invalid(ValidationError::PayloadTooLarge {
                len_bytes: 2,
                max_bytes: 1,
            })),
            "04020201",
        ),
        (
            encoded(&TaskReply::Invalid(ValidationError::IterationsOutOfRange {
                iterations: 0,
                max: 10,
            })),
            "0403000a",
        ),
        (
            encoded(&ReportMsg::Report {
                node: "n1".into(),
                distribution: BTreeMap::from([("n1".into(), 2), ("n2".into(), 3)]),
                total: 5,
            }),
            "00026e3102026e3102026e320305",
        ),
        (encoded(&ReportMsg::FinalReport), "01"),
        (encoded(&ReportMsg::WaitForReports { n: 3 }), "0203"),
        (
            encoded(&ReportMsg::WaitForReportsFrom {
                members: vec!["n1".into(), "n2".into()],
            }),
            "0302026e31026e32",
        ),
        (
            encoded(&ReportReply::Recorded { nodes_reported: 2 }),
            "0002",
        ),
        (
            encoded(&ReportReply::Final(FinalReport {
                distribution: BTreeMap::from([("n1".into(), 5)]),
                total: 5,
                nodes_reported: 1,
                reporters: vec!["n1".into()],
            })),
            "0101026e3105050101026e31",
        ),
        (
            encoded(&BarrierMsg::Arrive {
                node: "n1".into(),
                n: 3,
            }),
            "00026e3103",
        ),
        (
            encoded(&BarrierMsg::ArriveAmong {
                node: "n1".into(),
                members: vec!["n1".into(), "n2".into()],
            }),
            "01026e3102026e31026e32",
        ),
        (encoded(&BarrierReply::Released { arrived: 3 }), "0003"),
        // The replicated state of a completed task: phase, input digest,
        // result bytes, node name. 28 bytes for a 2-byte node name. The
        // input digest, from Python: hashlib.sha256((2).to_bytes(4,
        // 'little') + hashlib.sha256(b'hello').digest()).hexdigest()[:32]
        // (protocol version 3; version 2's hashed the payload itself).
        (
            encoded(&completed_task()),
            "01e7f9a715a2ac53808de94631ce1ae35f9595c9df90075148026e31",
        ),
    ];
    for (got, pinned) in cases {
        assert_eq!(got, pinned);
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z0-9 :/ü任]{0,12}"]
}

fn task_msg() -> impl Strategy<Value = TaskMsg> {
    prop_oneof![
        (text(), any::<u32>()).prop_map(|(payload, iterations)| TaskMsg::Submit {
            payload,
            iterations
        }),
        Just(TaskMsg::Get),
        Just(TaskMsg::WaitResult),
        (text(), text()).prop_map(|(result, processed_by)| TaskMsg::Completed {
            result,
            processed_by
        }),
        (text(), any::<u32>()).prop_map(|(payload, iterations)| TaskMsg::SubmitAndWait {
            payload,
            iterations
        }),
        (text(), any::<u32>(), any::<[u8; 8]>(), text()).prop_map(
            |(payload, iterations, result, by)| TaskMsg::Computed(JobOutput::new(
                &payload,
                iterations,
                ShortDigest(result),
                &by
            ))
        ),
    ]
}

fn task_reply() -> impl Strategy<Value = TaskReply> {
    let state = prop_oneof![Just(TaskState::Pending), Just(TaskState::Completed)];
    prop_oneof![
        Just(TaskReply::Accepted),
        (
            text(),
            state.clone(),
            proptest::option::of(text()),
            proptest::option::of(text())
        )
            .prop_map(
                |(id, status, result, processed_by)| TaskReply::Status(TaskStatus {
                    id,
                    status,
                    result,
                    processed_by
                })
            ),
        Just(TaskReply::NotFound),
        state.prop_map(|existing| TaskReply::Conflict { existing }),
        (any::<u64>(), any::<u64>()).prop_map(|(len_bytes, max_bytes)| TaskReply::Invalid(
            ValidationError::PayloadTooLarge {
                len_bytes,
                max_bytes
            }
        )),
        (any::<u32>(), any::<u32>()).prop_map(|(iterations, max)| TaskReply::Invalid(
            ValidationError::IterationsOutOfRange { iterations, max }
        )),
    ]
}

fn report_msg() -> impl Strategy<Value = ReportMsg> {
    prop_oneof![
        (
            text(),
            proptest::collection::btree_map(text(), any::<u64>(), 0..5),
            any::<u64>()
        )
            .prop_map(|(node, distribution, total)| ReportMsg::Report {
                node,
                distribution,
                total
            }),
        Just(ReportMsg::FinalReport),
        any::<u32>().prop_map(|n| ReportMsg::WaitForReports { n }),
    ]
}

proptest! {
    #[test]
    fn task_messages_round_trip(msg in task_msg(), reply in task_reply()) {
        round_trip(&msg);
        round_trip(&reply);
    }

    #[test]
    fn report_and_barrier_messages_round_trip(msg in report_msg(), node in text(), n in any::<u32>()) {
        round_trip(&msg);
        round_trip(&BarrierMsg::Arrive { node, n });
        round_trip(&BarrierReply::Released { arrived: n });
        round_trip(&ReportReply::Recorded { nodes_reported: n });
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = postcard::from_bytes::<TaskMsg>(&bytes);
        let _ = postcard::from_bytes::<TaskReply>(&bytes);
        let _ = postcard::from_bytes::<TaskEntity>(&bytes);
        let _ = postcard::from_bytes::<ReportMsg>(&bytes);
        let _ = postcard::from_bytes::<ReportReply>(&bytes);
        let _ = postcard::from_bytes::<ReportEntity>(&bytes);
        let _ = postcard::from_bytes::<BarrierMsg>(&bytes);
        let _ = postcard::from_bytes::<BarrierEntity>(&bytes);
    }

    /// A decoded task state always has a valid phase: a pending task with
    /// iterations 0 is refused (the count is a `NonZeroU32`).
    #[test]
    fn decoded_task_states_are_valid(payload in text()) {
        let mut bytes = vec![0u8];
        bytes.extend(postcard::to_allocvec(&payload).unwrap());
        bytes.push(0); // iterations = 0
        prop_assert!(postcard::from_bytes::<TaskEntity>(&bytes).is_err());
    }
}

#[test]
fn task_states_round_trip() {
    let mut pending: Option<TaskEntity> = None;
    deliver(
        "n1",
        "t",
        &mut pending,
        TaskMsg::Submit {
            payload: "ünï payload".into(),
            iterations: 7,
        },
    );
    round_trip(&pending.unwrap());
    round_trip(&completed_task());
}
