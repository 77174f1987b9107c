//! `[tasks]` settings and request validation.

use taskqueue::config::{PAYLOAD_BYTES_CEILING, TASK_ID_BYTES_CEILING, WORKERS_CEILING};
use taskqueue::{TasksConfig, ValidationError};

#[test]
fn defaults_are_valid_and_documented() {
    let c = TasksConfig::default();
    c.validate().unwrap();
    assert_eq!(c.max_payload_bytes, 1024 * 1024);
    assert_eq!(c.max_iterations, 10_000_000);
    assert_eq!(c.max_task_id_bytes, 256);
    assert_eq!(c.workers, 0);
    assert!(c.worker_count().get() >= 1);
    assert_eq!(c.ask_timeout().as_millis(), 10_000);
    assert_eq!(c.result_timeout().as_millis(), 60_000);
    assert_eq!(c.barrier_timeout().as_millis(), 300_000);
}

#[test]
fn out_of_range_settings_name_their_key() {
    let cases: Vec<(&str, TasksConfig)> = vec![
        (
            "max_payload_bytes",
            TasksConfig {
                max_payload_bytes: 0,
                ..TasksConfig::default()
            },
        ),
        (
            "max_payload_bytes",
            TasksConfig {
                max_payload_bytes: PAYLOAD_BYTES_CEILING + 1,
                ..TasksConfig::default()
            },
        ),
        (
            "max_iterations",
            TasksConfig {
                max_iterations: 0,
                ..TasksConfig::default()
            },
        ),
        (
            "max_task_id_bytes",
            TasksConfig {
                max_task_id_bytes: 0,
                ..TasksConfig::default()
            },
        ),
        (
            "max_task_id_bytes",
            TasksConfig {
                max_task_id_bytes: TASK_ID_BYTES_CEILING + 1,
                ..TasksConfig::default()
            },
        ),
        (
            "workers",
            TasksConfig {
                workers: WORKERS_CEILING + 1,
                ..TasksConfig::default()
            },
        ),
        (
            "ask_timeout_ms",
            TasksConfig {
                ask_timeout_ms: 0,
                ..TasksConfig::default()
            },
        ),
        (
            "result_timeout_ms",
            TasksConfig {
                result_timeout_ms: 0,
                ..TasksConfig::default()
            },
        ),
        (
            "barrier_timeout_ms",
            TasksConfig {
                barrier_timeout_ms: 0,
                ..TasksConfig::default()
            },
        ),
    ];
    for (key, config) in cases {
        let err = config.validate().unwrap_err();
        assert_eq!(err.key, key);
        assert!(
            err.to_string()
                .starts_with(&format!("tasks.{key}: must be")),
            "{err}"
        );
    }
    let err = TasksConfig {
        max_iterations: 0,
        ..TasksConfig::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tasks.max_iterations: must be from 1 to 4294967295, got 0"
    );
}

#[test]
fn workers_override_the_core_count() {
    let c = TasksConfig {
        workers: 3,
        ..TasksConfig::default()
    };
    assert_eq!(c.worker_count().get(), 3);
}

fn small() -> TasksConfig {
    TasksConfig {
        max_payload_bytes: 8,
        max_iterations: 100,
        max_task_id_bytes: 6,
        ..TasksConfig::default()
    }
}

#[test]
fn submits_within_the_limits_pass_including_the_bounds() {
    let c = small();
    assert_eq!(
        c.validate_submit("abcdef", "12345678", 100).unwrap().get(),
        100
    );
    assert_eq!(c.validate_submit("a", "", 1).unwrap().get(), 1);
    // Any UTF-8 id, counted in bytes: "ü/:" is 4 bytes, "任务" is 6.
    for id in ["ü/:", "任务", "a b:c", "🦀"] {
        c.validate_task_id(id).unwrap();
    }
}

#[test]
fn submits_breaking_a_limit_get_the_typed_error() {
    let c = small();
    assert_eq!(
        c.validate_submit("", "p", 1),
        Err(ValidationError::EmptyTaskId)
    );
    assert_eq!(
        c.validate_submit("任务x", "p", 1),
        Err(ValidationError::TaskIdTooLong {
            len_bytes: 7,
            max_bytes: 6
        })
    );
    assert_eq!(
        c.validate_submit("t", "ééééé", 1),
        Err(ValidationError::PayloadTooLarge {
            len_bytes: 10,
            max_bytes: 8
        })
    );
    assert_eq!(
        c.validate_submit("t", "p", 0),
        Err(ValidationError::IterationsOutOfRange {
            iterations: 0,
            max: 100
        })
    );
    assert_eq!(
        c.validate_submit("t", "p", 101),
        Err(ValidationError::IterationsOutOfRange {
            iterations: 101,
            max: 100
        })
    );
    assert_eq!(
        ValidationError::IterationsOutOfRange {
            iterations: 0,
            max: 100
        }
        .to_string(),
        "iterations must be from 1 to 100 (tasks.max_iterations), got 0"
    );
    assert_eq!(
        ValidationError::PayloadTooLarge {
            len_bytes: 10,
            max_bytes: 8
        }
        .to_string(),
        "the payload is 10 bytes long, more than the maximum of 8 (tasks.max_payload_bytes)"
    );
}

#[test]
fn a_frame_too_small_for_any_payload_names_the_frame_size_to_raise_to() {
    // 65,536-byte ids and their envelope fill a 65,536-byte frame: no
    // payload limit would fit, so only raising the frame is offered.
    let config = TasksConfig {
        max_task_id_bytes: 65_536,
        max_payload_bytes: 1,
        ..TasksConfig::default()
    };
    let text = config.check_frame_limit(65_536).unwrap_err().to_string();
    assert!(
        text.ends_with("raise transport.max_frame_bytes to 69633") && !text.contains("lower it"),
        "{text}"
    );
    // With room left, both remedies, each of which passes.
    let config = TasksConfig::default();
    let text = config.check_frame_limit(1_048_576).unwrap_err().to_string();
    assert!(
        text.ends_with("lower it to 1044224 or raise transport.max_frame_bytes to 1052928"),
        "{text}"
    );
    TasksConfig {
        max_payload_bytes: 1_044_224,
        ..config.clone()
    }
    .check_frame_limit(1_048_576)
    .unwrap();
    config.check_frame_limit(1_052_928).unwrap();
}
