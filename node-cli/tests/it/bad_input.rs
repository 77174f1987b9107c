//! Bad input: a one-line error naming the problem and a non-zero exit.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use casty_tests::{Process, reserve_port};

use crate::{node_cmd, scratch, spawn};

/// Time a refused start may take.
const REFUSE: Duration = Duration::from_secs(20);

/// Runs `cmd` to its exit; returns the status and the non-empty stderr lines.
fn run(name: &str, cmd: std::process::Command) -> (ExitStatus, Vec<String>) {
    let mut p = Process::spawn(name, cmd).unwrap();
    let status = p
        .wait_exit(Instant::now() + REFUSE)
        .unwrap()
        .unwrap_or_else(|| panic!("{name} still running"));
    let lines = p
        .stderr()
        .snapshot()
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .collect();
    (status, lines)
}

#[test]
fn an_unknown_key_in_casty_toml_is_named_with_its_file() {
    let dir = scratch();
    std::fs::write(
        dir.join("casty.toml"),
        "[system]\nname = \"task-queue\"\n\n[cluster]\nport = 25520\nbogus_key = 1\n",
    )
    .unwrap();
    let mut cmd = node_cmd("cfg", &["--port", "0"]);
    cmd.current_dir(&dir);
    let (status, lines) = run("cfg", cmd);
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(lines[0].contains("bogus_key"), "names the key: {lines:?}");
    assert!(lines[0].contains("casty.toml"), "names the file: {lines:?}");
}

/// A value out of its range names the key and where it came from: the
/// file, or the environment; an integer above TOML's largest is refused.
#[test]
fn an_out_of_range_value_is_named_with_its_source() {
    let dir = scratch();
    std::fs::write(dir.join("casty.toml"), "[sharding]\nmax_parked_asks = 0\n").unwrap();
    let mut cmd = node_cmd("range-src", &["--port", "0"]);
    cmd.current_dir(&dir);
    let (status, lines) = run("range-src", cmd);
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(
        lines[0].contains("sharding.max_parked_asks"),
        "names the key: {lines:?}"
    );
    assert!(lines[0].contains("casty.toml"), "names the file: {lines:?}");

    let mut cmd = node_cmd("range-env", &["--port", "0"]);
    cmd.env("CASTY_SHARDING__REPLICATE_TIMEOUT_MS", "0");
    let (status, lines) = run("range-env", cmd);
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert!(
        lines[0].contains("sharding.replicate_timeout_ms"),
        "names the key: {lines:?}"
    );
    assert!(
        lines[0].contains("(from environment variable CASTY_SHARDING__REPLICATE_TIMEOUT_MS)"),
        "names the variable: {lines:?}"
    );

    // Above the largest TOML integer: accepted before, and then the
    // effective configuration could not be printed.
    let mut cmd = node_cmd("range-u64", &["--port", "0", "--print-config"]);
    cmd.env("CASTY_SHARDING__MAX_PARKED_ASKS", "18446744073709551615");
    let (status, lines) = run("range-u64", cmd);
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(
        lines[0].contains("sharding.max_parked_asks"),
        "names the key: {lines:?}"
    );
}

/// `--print-config` refuses what a run refuses (exit 2), so what it prints
/// is what a run would accept.
#[test]
fn print_config_refuses_what_a_run_refuses() {
    for args in [
        &["--print-config", "--iterations", "0"][..],
        &["--print-config", "--tasks", "10000001"][..],
    ] {
        let (status, lines) = run("print-bad", node_cmd("print-bad", args));
        assert_eq!(status.code(), Some(2), "{args:?}: {lines:?}");
        assert_eq!(lines.len(), 1, "one line: {lines:?}");
    }
    let (status, lines) = run("print-bad", node_cmd("two words", &["--print-config"]));
    assert_eq!(status.code(), Some(2), "{lines:?}");
    // The runtime's thread count: printed with exit 0 before, while a run
    // refused it.
    for threads in ["0", "abc", "5000"] {
        let mut cmd = node_cmd("print-threads", &["--print-config"]);
        cmd.env("TOKIO_WORKER_THREADS", threads);
        let (status, lines) = run("print-threads", cmd);
        assert_eq!(status.code(), Some(2), "{threads}: {lines:?}");
        assert_eq!(lines.len(), 1, "one line: {lines:?}");
        assert!(
            lines[0].contains(&format!("TOKIO_WORKER_THREADS={threads:?}")),
            "{lines:?}"
        );
    }
}

/// A `CASTY_*` value is read as `casty.toml` reads it for its key: a number
/// key takes TOML's number syntax (exponents were "not a number" before),
/// a text key keeps its text even where it reads as a number, and a number
/// out of a key's range gets the range message, naming the variable.
#[test]
fn environment_values_are_read_as_the_file_reads_them() {
    let env = [
        ("CASTY_CLUSTER__HEARTBEAT__INTERVAL", "5e-1"),
        (
            "CASTY_CLUSTER__HEARTBEAT__AVAILABILITY_CHECK_INTERVAL",
            "3e0",
        ),
        ("CASTY_CLUSTER__FAILURE_DETECTOR__THRESHOLD", "1e1"),
        ("CASTY_CLUSTER__HOST", "1e5"),
        ("CASTY_SYSTEM__NAME", "inf"),
        ("CASTY_DEFAULTS__MAILBOX__STRATEGY", "drop_new"),
    ];
    let mut cmd = node_cmd("env-toml", &["--print-config"]);
    cmd.envs(env);
    let mut p = Process::spawn("env-toml", cmd).unwrap();
    let status = p.wait_exit(Instant::now() + REFUSE).unwrap();
    let (out, err) = (p.stdout().snapshot(), p.stderr().snapshot());
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{err:?}");
    // Each key after its section's header.
    let value = |section: &str, key: &str| {
        out.iter()
            .skip_while(|l| *l != &format!("[{section}]"))
            .find_map(|l| l.strip_prefix(&format!("{key} = ")))
            .map(str::to_owned)
    };
    assert_eq!(
        value("cluster.heartbeat", "interval").as_deref(),
        Some("0.5")
    );
    assert_eq!(
        value("cluster.heartbeat", "availability_check_interval").as_deref(),
        Some("3.0")
    );
    assert_eq!(
        value("cluster.failure_detector", "threshold").as_deref(),
        Some("10.0")
    );
    assert_eq!(value("cluster", "host").as_deref(), Some("\"1e5\""));
    assert_eq!(value("system", "name").as_deref(), Some("\"inf\""));
    assert_eq!(
        value("defaults.mailbox", "strategy").as_deref(),
        Some("\"drop_new\"")
    );

    let var = "CASTY_CLUSTER__FAILURE_DETECTOR__THRESHOLD";
    let mut cmd = node_cmd("env-range", &["--print-config"]);
    cmd.env(var, "1e308");
    let (status, lines) = run("env-range", cmd);
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(
        lines[0].contains("`cluster.failure_detector.threshold` = 1000")
            && lines[0].contains("is outside 1..=64")
            && lines[0].ends_with(&format!("(from environment variable {var})")),
        "{lines:?}"
    );
    // Beyond f64 (TOML refuses it): out of range too, not "not a number".
    let var = "CASTY_CLUSTER__HEARTBEAT__INTERVAL";
    let mut cmd = node_cmd("env-range", &["--print-config"]);
    cmd.env(var, "1e999");
    let (status, lines) = run("env-range", cmd);
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert_eq!(
        lines,
        [format!(
            "error: configuration: cluster.heartbeat.interval: 1e999 is out of range: expected a number (from environment variable {var})"
        )]
    );
}

/// Membership keys are named by their full path and source: a
/// `[cluster.membership]` key, and a seed interval outside 1 ms to a day
/// (a 100 ns gossip interval would only spin).
#[test]
fn membership_keys_are_named_by_full_path_with_their_source() {
    let cases = [
        (
            "[cluster.membership]\nprobe_timeout_ms = 5000\n",
            // Each key with its own source: the value to change may be either.
            "`cluster.membership.probe_timeout_ms` (5s) must be smaller than \
             `cluster.heartbeat.interval` (500ms) \
             (cluster.membership.probe_timeout_ms from TOML file casty.toml; \
             cluster.heartbeat.interval from the built-in default)",
        ),
        (
            "[cluster.gossip]\ninterval = 0.0000001\n",
            "`cluster.gossip.interval` must be within 1ms..=86400s (it is 100ns)",
        ),
        (
            "[cluster.gossip]\ninterval = 1e300\n",
            "`cluster.gossip.interval` must be within 1ms..=86400s (it is longer than any duration)",
        ),
    ];
    for (i, (toml, expected)) in cases.into_iter().enumerate() {
        let dir = scratch();
        std::fs::write(dir.join("casty.toml"), toml).unwrap();
        let name = format!("membership-key-{i}");
        let mut cmd = node_cmd(&name, &["--port", "0"]);
        cmd.current_dir(&dir);
        let (status, lines) = run(&name, cmd);
        assert_eq!(status.code(), Some(2), "{lines:?}");
        assert_eq!(lines.len(), 1, "one line: {lines:?}");
        assert!(lines[0].contains(expected), "{expected:?} in {lines:?}");
        assert!(
            lines[0].contains("from TOML file"),
            "names the source: {lines:?}"
        );
    }
}

#[test]
fn an_unknown_key_in_an_explicit_config_file_is_named_with_its_file() {
    let dir = scratch();
    let path = dir.join("other.toml");
    std::fs::write(&path, "[tasks]\nnot_a_key = true\n").unwrap();
    let path = path.to_string_lossy().into_owned();
    let (status, lines) = run("cfg", node_cmd("cfg", &["--port", "0", "--config", &path]));
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(lines[0].contains("not_a_key"), "names the key: {lines:?}");
    assert!(lines[0].contains("other.toml"), "names the file: {lines:?}");
}

#[test]
fn a_seed_without_a_port_is_refused() {
    let (status, lines) = run(
        "noport",
        node_cmd("noport", &["--port", "0", "--seed", "127.0.0.1"]),
    );
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(lines[0].contains("127.0.0.1"), "names the value: {lines:?}");
    assert!(lines[0].contains("seed"), "names the key: {lines:?}");
    assert!(
        lines[0].contains("(from command-line flag --seed)"),
        "names the flag it came from: {lines:?}"
    );
    // Port 0 is nobody's listening port: refused at once, not after the
    // join deadline.
    let (status, lines) = run(
        "port0",
        node_cmd("port0", &["--port", "0", "--seed", "127.0.0.1:0"]),
    );
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert!(lines[0].contains("port 0"), "{lines:?}");
    // An IPv6 address without brackets: `::1` is no host `:` with port 1.
    let (status, lines) = run("v6", node_cmd("v6", &["--port", "0", "--seed", "::1"]));
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert!(lines[0].contains("[::1]:25520"), "{lines:?}");
}

/// The file's own values are checked whatever overrides them, and a
/// `casty.toml` that cannot be read (a directory) is an error, not
/// silently skipped.
#[test]
fn a_bad_file_is_refused_even_where_a_flag_overrides_it() {
    let dir = scratch();
    std::fs::write(dir.join("casty.toml"), "cluster = 5\n").unwrap();
    let mut cmd = node_cmd("typed", &["--port", "0"]);
    cmd.current_dir(&dir);
    let (status, lines) = run("typed", cmd);
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert!(
        lines[0].contains("cluster: found 5, expected a table of keys (from TOML file"),
        "{lines:?}"
    );

    let dir = scratch();
    std::fs::create_dir(dir.join("casty.toml")).unwrap();
    let mut cmd = node_cmd("dir", &["--port", "0"]);
    cmd.current_dir(&dir);
    let (status, lines) = run("dir", cmd);
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert!(lines[0].contains("config file casty.toml"), "{lines:?}");
}

/// A node whose cluster name differs from its seed's is refused at the
/// handshake for good: it gives up at once rather than at the join
/// deadline (30 s by default), its error says why (the seed answered, just
/// not to membership), and the refusal is warned once, not per retry.
#[test]
fn a_node_of_another_cluster_names_the_seeds_refusal() {
    let _heavy = casty_tests::serial();
    let deadline = Instant::now() + Duration::from_secs(60);
    let seed = spawn("seed-x", &["--port", "0", "--tasks", "0", "--nodes", "2"]);
    let addr = casty_tests::listen_addr(&seed, deadline).unwrap();
    let mut cmd = node_cmd("stranger", &["--port", "0", "--seed", &addr.to_string()]);
    cmd.env("CASTY_SYSTEM__NAME", "another-cluster");
    let start = Instant::now();
    let (status, lines) = run("stranger", cmd);
    let took = start.elapsed();
    assert_eq!(status.code(), Some(1), "{lines:?}");
    assert!(
        took < Duration::from_secs(15),
        "gave up at the refusal, not at the 30 s join deadline: {took:?}"
    );
    let error = lines
        .iter()
        .find(|l| l.contains("ERROR") && l.contains("could not join the cluster"))
        .unwrap_or_else(|| panic!("no join error: {lines:?}"));
    assert!(
        error.contains("every seed refused this node for good")
            && error.contains("handshake was refused")
            && error.contains("another-cluster"),
        "the error gives the seed's refusal: {error}"
    );
    let warned = lines
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("handshake refused by peer"))
        .count();
    assert_eq!(warned, 1, "one warning for a steady refusal: {lines:?}");
}

/// A node of the cluster with another shard count would map ids to other
/// shards than its peers and route every message in circles: its seed
/// refuses it at the handshake, it gives up at once (exit 1) and the error
/// gives both settings.
#[test]
fn a_node_with_another_shard_count_is_refused_at_once() {
    let _heavy = casty_tests::serial();
    let deadline = Instant::now() + Duration::from_secs(60);
    let seed = spawn("seed-s", &["--port", "0", "--tasks", "0", "--nodes", "2"]);
    let addr = casty_tests::listen_addr(&seed, deadline).unwrap();
    let mut cmd = node_cmd("shards", &["--port", "0", "--seed", &addr.to_string()]);
    cmd.env("CASTY_DEFAULTS__SHARDING__NUM_SHARDS", "10");
    let start = Instant::now();
    let (status, lines) = run("shards", cmd);
    assert_eq!(status.code(), Some(1), "{lines:?}");
    assert!(start.elapsed() < Duration::from_secs(15), "{lines:?}");
    let error = lines
        .iter()
        .find(|l| l.contains("ERROR") && l.contains("could not join the cluster"))
        .unwrap_or_else(|| panic!("no join error: {lines:?}"));
    assert!(
        error.contains(r#"settings "num_shards=10 replication_factor=2 max_frame_bytes=8388608""#)
            && error
                .contains(r#"with "num_shards=50 replication_factor=2 max_frame_bytes=8388608""#),
        "the error gives both settings: {error}"
    );
}

/// `--nodes 3` on a node left alone: at the barrier timeout (1 s here) it
/// exits 1 saying how many of the members it waited for joined.
#[test]
fn too_few_members_for_nodes_says_how_many_joined() {
    let mut cmd = node_cmd("alone", &["--port", "0", "--nodes", "3"]);
    cmd.env("CASTY_TASKS__BARRIER_TIMEOUT_MS", "1000");
    let (status, lines) = run("alone", cmd);
    assert_eq!(status.code(), Some(1), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ERROR") && l.contains("only 1 of the 3 members (--nodes) joined")),
        "{lines:?}"
    );
}

/// No process listens on the seed's port: after the join deadline (1.5 s
/// here, through `CASTY_`) the node gives up with a clear error.
#[test]
fn a_seed_that_never_answers_fails_after_the_join_deadline() {
    let _heavy = casty_tests::serial();
    let port = reserve_port().unwrap();
    let seed = format!("127.0.0.1:{port}");
    let mut cmd = node_cmd("lonely", &["--port", "0", "--seed", &seed]);
    cmd.env("CASTY_CLUSTER__MEMBERSHIP__JOIN_DEADLINE_MS", "1500");
    let start = Instant::now();
    let (status, lines) = run("lonely", cmd);
    let took = start.elapsed();
    assert!(!status.success(), "exit {status}: {lines:?}");
    assert!(
        took >= Duration::from_millis(1500),
        "gave up after the deadline, not before: {took:?}"
    );
    assert!(
        took < Duration::from_secs(15),
        "gave up soon after the deadline: {took:?}"
    );
    let errors: Vec<&String> = lines.iter().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors
            .iter()
            .any(|l| l.contains("join") && l.contains(&seed)),
        "a clear error naming the seed: {errors:?}"
    );
    // Nothing listens there: the error says why the last dial failed.
    assert!(
        errors
            .iter()
            .any(|l| l.contains("the last dial failed for") && l.contains("refused")),
        "the dial's failure in the error: {errors:?}"
    );
}

/// Values that would exhaust memory or fail every submit later are refused
/// before the node starts: one line naming the flag or key, exit 2.
#[test]
fn out_of_range_workload_and_sharding_values_are_configuration_errors() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 16] = [
        (&["--iterations", "0"], &[], "--iterations"),
        // A bad value under a flag that replaces it is still an error.
        (&[], &[("CASTY_CLUSTER__PORT", "abc")], "cluster.port"),
        // A variable that names no key is refused, not ignored.
        (
            &[],
            &[("CASTY_CLUSTER____PORT", "5")],
            "CASTY_CLUSTER____PORT",
        ),
        (
            &[],
            &[("TOKIO_WORKER_THREADS", "0")],
            "TOKIO_WORKER_THREADS",
        ),
        (
            &[],
            &[("TOKIO_WORKER_THREADS", "abc")],
            "TOKIO_WORKER_THREADS",
        ),
        (&["--iterations", "4294967295"], &[], "max_iterations"),
        (&["--tasks", "4294967295"], &[], "--tasks"),
        // Past u32: the limits' own messages, not clap's integer range.
        (
            &["--iterations", "5000000000"],
            &[],
            "--iterations 5000000000 is outside 1..=tasks.max_iterations",
        ),
        (
            &["--tasks", "5000000000"],
            &[],
            "--tasks 5000000000 is above the limit of 10000000",
        ),
        (
            &[],
            &[("CASTY_DEFAULTS__SHARDING__NUM_SHARDS", "100000000")],
            "num_shards",
        ),
        (
            &[],
            &[("CASTY_SHARDING__RETIRE_AFTER_MS", "0")],
            "sharding.retire_after_ms",
        ),
        (
            &[],
            &[("CASTY_CLUSTER__MEMBERSHIP__MAX_SYNC_BYTES", "16777216")],
            "transport.max_frame_bytes",
        ),
        // Limits the node's own task ids and payloads do not fit: every
        // submit would be refused.
        (
            &["--tasks", "2000"],
            &[("CASTY_TASKS__MAX_TASK_ID_BYTES", "3")],
            // The key's source too.
            "tasks.max_task_id_bytes from environment variable CASTY_TASKS__MAX_TASK_ID_BYTES",
        ),
        (
            &["--tasks", "2000"],
            &[("CASTY_TASKS__MAX_PAYLOAD_BYTES", "5")],
            "tasks.max_payload_bytes",
        ),
        // A settle period the settle wait can never see through.
        (
            &["--settle-ms", "99999999999"],
            &[],
            "tasks.barrier_timeout_ms",
        ),
        // "Any address" is not one peers can dial.
        (&["--host", "0.0.0.0"], &[], "--bind-host 0.0.0.0"),
    ];
    for (args, env, key) in cases {
        let mut all = vec!["--port", "0"];
        all.extend_from_slice(args);
        let mut cmd = node_cmd("range", &all);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (status, lines) = run("range", cmd);
        assert_eq!(status.code(), Some(2), "{args:?} {env:?}: {lines:?}");
        assert_eq!(lines.len(), 1, "one line: {lines:?}");
        assert!(lines[0].contains(key), "names {key}: {lines:?}");
    }
}

/// A node name longer than membership accepts is refused at start (exit 2),
/// not after binding.
#[test]
fn a_too_long_name_is_a_configuration_error() {
    let long_name = "n".repeat(300);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_node-cli"));
    cmd.args(["--name", &long_name, "--port", "0"])
        .current_dir(scratch());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CASTY_") {
            cmd.env_remove(key);
        }
    }
    let (status, lines) = run("longname", cmd);
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(lines[0].contains("300 bytes"), "{lines:?}");
}

/// A name with a newline or a space would split or shift every log line's
/// fields: refused with one line, exit 2.
#[test]
fn a_name_with_whitespace_or_control_characters_is_refused() {
    // `@` and `#` too: a member shows as name@address#generation.
    for bad in [
        "a\nb",
        "two words",
        "tab\there",
        "bell\u{7}",
        "x@127.0.0.1:1#5",
        "a#b",
        // Invisible: a zero-width space, a right-to-left override.
        "node\u{200b}1",
        "node\u{202e}1",
        "node\u{e0020}1",
        // Blank (braille blank), a noncharacter, a combining mark first.
        "\u{2800}",
        "node\u{ffff}",
        "\u{301}node",
    ] {
        let (status, lines) = run("badname", node_cmd(bad, &["--port", "0"]));
        assert_eq!(status.code(), Some(2), "{bad:?}: {lines:?}");
        assert_eq!(lines.len(), 1, "one line: {lines:?}");
        assert!(lines[0].contains("not allowed"), "{lines:?}");
    }
}

/// An advertised host that breaks the transport's identity rule (a space,
/// the braille blank, `@`, more than 259 bytes with its port, a newline)
/// is a configuration error naming the key and its source (exit 2, one
/// line, the host escaped), from a flag, the file or the environment, also
/// under `--print-config`; so is such a bind host. It was accepted by
/// `--print-config` and failed at start (exit 1, "cannot start the
/// transport", no source), or with a newline reached DNS and split a log
/// line. `auto` is still accepted (resolved at start).
#[test]
fn an_advertised_host_breaking_the_identity_rule_is_a_configuration_error() {
    let long = "h".repeat(254);
    let bad = ["a b", "\u{2800}", "a@b", long.as_str(), "127.0.0.1\nx"];
    for host in bad {
        for args in [
            &["--host", host, "--port", "0"][..],
            &["--host", host, "--port", "0", "--bind-host", "127.0.0.1"][..],
            &["--host", host, "--port", "0", "--print-config"][..],
        ] {
            let (status, lines) = run("badhost", node_cmd("badhost", args));
            assert_eq!(status.code(), Some(2), "{host:?} {args:?}: {lines:?}");
            assert_eq!(lines.len(), 1, "one line: {lines:?}");
            assert!(
                lines[0].starts_with("error: configuration: cluster.host: node address ")
                    && lines[0].ends_with("(from command-line flag --host)"),
                "{lines:?}"
            );
        }
    }
    // From the file and the environment.
    let dir = scratch();
    std::fs::write(dir.join("casty.toml"), "[cluster]\nhost = \"a b\"\n").unwrap();
    let mut cmd = node_cmd("badhost-file", &["--port", "0", "--print-config"]);
    cmd.current_dir(&dir);
    let (status, lines) = run("badhost-file", cmd);
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert!(
        lines[0].starts_with("error: configuration: cluster.host: ")
            && lines[0].contains("casty.toml"),
        "{lines:?}"
    );
    let mut cmd = node_cmd("badhost-env", &["--port", "0", "--print-config"]);
    cmd.env("CASTY_CLUSTER__HOST", "a@b");
    let (status, lines) = run("badhost-env", cmd);
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert!(
        lines[0].starts_with("error: configuration: cluster.host: ")
            && lines[0].ends_with("(from environment variable CASTY_CLUSTER__HOST)"),
        "{lines:?}"
    );
    // The bind host.
    let (status, lines) = run(
        "badbind",
        node_cmd(
            "badbind",
            &["--bind-host", "a\nb", "--port", "0", "--print-config"],
        ),
    );
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(
        lines[0].starts_with("error: configuration: node.bind_host: ")
            && lines[0].ends_with("(from command-line flag --bind-host)"),
        "{lines:?}"
    );
    // The longest DNS name is still an address; `auto` is resolved later.
    let longest = "h".repeat(253);
    for host in [longest.as_str(), "auto", "::1", "[::1]"] {
        let (status, lines) = run(
            "goodhost",
            node_cmd(
                "goodhost",
                &["--host", host, "--port", "0", "--print-config"],
            ),
        );
        assert_eq!(status.code(), Some(0), "{host}: {lines:?}");
    }
}

/// A cluster name longer than 1,024 bytes is refused (exit 2, one line
/// naming `system.name` and its source): one of about 16 KB was accepted,
/// and no node could join, its handshake's `Hello` (the cluster name and
/// the settings) above the 16 KiB handshake frame.
#[test]
fn a_cluster_name_above_1024_bytes_is_a_configuration_error() {
    let long = "c".repeat(1025);
    let mut cmd = node_cmd("longcluster", &["--port", "0", "--print-config"]);
    cmd.env("CASTY_SYSTEM__NAME", &long);
    let (status, lines) = run("longcluster", cmd);
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(
        lines[0].starts_with("error: configuration: system.name is 1025 bytes, above 1024")
            && lines[0].ends_with("(from environment variable CASTY_SYSTEM__NAME)"),
        "{lines:?}"
    );
    let dir = scratch();
    std::fs::write(
        dir.join("casty.toml"),
        format!("[system]\nname = \"{}\"\n", "c".repeat(16 * 1024)),
    )
    .unwrap();
    let mut cmd = node_cmd("longcluster-file", &["--port", "0"]);
    cmd.current_dir(&dir);
    let (status, lines) = run("longcluster-file", cmd);
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(
        lines[0].starts_with("error: configuration: system.name is 16384 bytes")
            && lines[0].contains("casty.toml"),
        "{lines:?}"
    );
    // 1,024 bytes is a name.
    let mut cmd = node_cmd("cluster1024", &["--port", "0", "--print-config"]);
    cmd.env("CASTY_SYSTEM__NAME", "c".repeat(1024));
    let (status, lines) = run("cluster1024", cmd);
    assert_eq!(status.code(), Some(0), "{lines:?}");
}
