//! A `CASTY_` value reads as the same text after `key = ` in `casty.toml`
//! (README, "Configuration"): each case runs `--print-config` once with
//! the text in a file and once in the variable, and both print the same
//! configuration or both refuse it (exit 2, one line naming the source).
//! A text key also takes unquoted text from the environment, which the
//! file refuses.

use std::time::{Duration, Instant};

use casty_tests::Process;

use crate::{node_cmd, scratch};

/// Time `--print-config` may take.
const PRINT: Duration = Duration::from_secs(20);

/// What `--print-config` gave: the configuration printed (exit 0), or the
/// one error line (exit 2).
#[derive(Debug, PartialEq)]
enum Read {
    Printed(Vec<String>),
    Refused(String),
}

/// Runs `--print-config` with `setup` applied to the command.
fn print_config(label: &str, setup: impl FnOnce(&mut std::process::Command)) -> Read {
    let mut cmd = node_cmd("env-file", &["--print-config"]);
    setup(&mut cmd);
    let mut p = Process::spawn(label, cmd).unwrap();
    let status = p
        .wait_exit(Instant::now() + PRINT)
        .unwrap()
        .unwrap_or_else(|| panic!("{label}: still running"));
    let err: Vec<String> = p
        .stderr()
        .snapshot()
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .collect();
    match status.code() {
        Some(0) => Read::Printed(p.stdout().snapshot()),
        Some(2) => {
            assert_eq!(err.len(), 1, "{label}: one line: {err:?}");
            Read::Refused(err[0].clone())
        }
        other => panic!("{label}: exit {other:?}: {err:?}"),
    }
}

/// `text` after `key = ` under `[section]` in a config file.
fn from_file(section: &str, key: &str, text: &str) -> Read {
    let dir = scratch();
    let path = dir.join("casty.toml");
    std::fs::write(&path, format!("[{section}]\n{key} = {text}\n")).unwrap();
    print_config("file", |cmd| {
        cmd.arg("--config").arg(&path);
    })
}

/// The variable of `section.key`.
fn variable(section: &str, key: &str) -> String {
    format!("CASTY_{section}.{key}")
        .to_uppercase()
        .replace('.', "__")
}

/// `text` as the value of `section.key`'s variable.
fn from_env(section: &str, key: &str, text: &str) -> Read {
    print_config("env", |cmd| {
        cmd.env(variable(section, key), text);
    })
}

/// The line `key = ...` printed under `[section]`.
fn printed<'a>(lines: &'a [String], section: &str, key: &str) -> Option<&'a str> {
    lines
        .iter()
        .skip_while(|l| **l != format!("[{section}]"))
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .find(|l| l.starts_with(&format!("{key} = ")))
        .map(String::as_str)
}

/// Whether `text` reads the same from a file and from the environment:
/// with `want` (`Some("port = 25521")`, the line printed), each prints the
/// same configuration with that line; with `None`, each refuses it naming
/// the key and its source. `Err` says how they differ.
fn same(section: &str, key: &str, text: &str, want: Option<&str>) -> Result<(), String> {
    let (file, env) = (from_file(section, key, text), from_env(section, key, text));
    let case = format!("{section}.{key} = {text:?}");
    let dotted = format!("{section}.{key}");
    let var = variable(section, key);
    match (&file, &env, want) {
        (Read::Printed(f), Read::Printed(e), Some(want)) => {
            let (f_line, e_line) = (printed(f, section, key), printed(e, section, key));
            if f_line != Some(want) {
                return Err(format!("{case}: the file printed {f_line:?}"));
            }
            let differ: Vec<(&String, &String)> = f.iter().zip(e).filter(|(a, b)| a != b).collect();
            if !differ.is_empty() || f.len() != e.len() {
                return Err(format!(
                    "{case}: the file printed {f_line:?}, the environment {e_line:?} ({differ:?})"
                ));
            }
            Ok(())
        }
        (Read::Refused(f), Read::Refused(e), None) => {
            if !(f.contains("casty.toml") && f.contains(&dotted)) {
                return Err(format!("{case}: the file's line: {f}"));
            }
            if !(e.contains(&format!("environment variable {var}")) && e.contains(&dotted)) {
                return Err(format!("{case}: the environment's line: {e}"));
            }
            Ok(())
        }
        _ => {
            let brief = |r: &Read| match r {
                Read::Printed(lines) => format!("printed {:?}", printed(lines, section, key)),
                Read::Refused(line) => format!("refused: {line}"),
            };
            Err(format!(
                "{case}: want {}; the file {}, the environment {}",
                want.unwrap_or("a refusal"),
                brief(&file),
                brief(&env)
            ))
        }
    }
}

/// Asserts [`same`] for every case, listing each that differs.
fn assert_same(cases: &[(&str, &str, &str, Option<&str>)]) {
    let differ: Vec<String> = cases
        .iter()
        .filter_map(|(section, key, text, want)| same(section, key, text, *want).err())
        .collect();
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// TOML writes numbers without leading zeros: `port = 007` is refused by
/// the file and was read as 7 from `CASTY_CLUSTER__PORT=007`.
#[test]
fn leading_zeros_are_refused_from_the_environment_as_from_the_file() {
    assert_same(&[
        ("cluster", "port", "007", None),
        ("cluster", "port", "+007", None),
        ("cluster.heartbeat", "interval", "00.5", None),
        ("defaults.sharding", "num_shards", "010", None),
        // In quotes, text.
        ("system", "name", "\"007\"", Some("name = \"007\"")),
        // A zero alone is a number.
        (
            "cluster.membership",
            "indirect_probes",
            "0",
            Some("indirect_probes = 0"),
        ),
    ]);
}

/// Quotes are TOML's: `'abc'` is the text abc (it was `'abc'` with its
/// quotes from the environment), a quoted number is text (refused for a
/// number key), and a quote TOML does not close is refused.
#[test]
fn quotes_read_the_same_from_the_environment_and_the_file() {
    assert_same(&[
        ("system", "name", "\"abc\"", Some("name = \"abc\"")),
        ("system", "name", "'abc'", Some("name = \"abc\"")),
        (
            "defaults.mailbox",
            "strategy",
            "'drop_new'",
            Some("strategy = \"drop_new\""),
        ),
        (
            "cluster",
            "seed_nodes",
            "['10.0.0.1:25520']",
            Some("seed_nodes = [\"10.0.0.1:25520\"]"),
        ),
        ("cluster", "port", "\"25521\"", None),
        ("cluster", "port", "'25521'", None),
        ("system", "name", "\"abc", None),
        ("system", "name", "\"x\" \"y\"", None),
    ]);
}

/// Spaces around the value are not part of it (`CASTY_SYSTEM__NAME=" 'abc' "`
/// was the text ` 'abc' `); spaces inside quotes are.
#[test]
fn surrounding_spaces_read_the_same_from_the_environment_and_the_file() {
    assert_same(&[
        ("cluster", "port", " 25521 ", Some("port = 25521")),
        (
            "cluster.heartbeat",
            "interval",
            "\t5e-1\t",
            Some("interval = 0.5"),
        ),
        ("system", "name", " 'abc' ", Some("name = \"abc\"")),
        ("system", "name", "  \"abc\"  ", Some("name = \"abc\"")),
        (
            "cluster",
            "seed_nodes",
            " [ '10.0.0.1:25520' ] ",
            Some("seed_nodes = [\"10.0.0.1:25520\"]"),
        ),
        ("system", "name", "\" abc \"", Some("name = \" abc \"")),
        ("cluster", "port", " 007 ", None),
    ]);
}

/// A `#` after the value starts a comment: `25521 # c` is the port 25521
/// (the environment refused it), `"abc" # c` the text abc (it was the whole
/// text with its quotes and comment).
#[test]
fn a_trailing_comment_reads_the_same_from_the_environment_and_the_file() {
    assert_same(&[
        (
            "cluster",
            "port",
            "25521 # the second node",
            Some("port = 25521"),
        ),
        ("cluster", "port", "25521#c", Some("port = 25521")),
        (
            "cluster.heartbeat",
            "interval",
            "5e-1 # half a second",
            Some("interval = 0.5"),
        ),
        ("system", "name", "\"abc\" # c", Some("name = \"abc\"")),
        ("system", "name", "\"a#b\"", Some("name = \"a#b\"")),
        (
            "cluster",
            "seed_nodes",
            "[\"10.0.0.1:25520\"] # the seed",
            Some("seed_nodes = [\"10.0.0.1:25520\"]"),
        ),
        // A comment and no value.
        ("cluster", "port", "# c", None),
    ]);
}

/// The one difference: a text key also takes unquoted text from the
/// environment (the file refuses it), all of it but the spaces around it:
/// `team #1` is the name `team #1`, not `team` (which would change a
/// cluster name without a word).
#[test]
fn a_text_key_also_takes_unquoted_text_from_the_environment() {
    let cases = [
        ("system", "name", "my-cluster", "name = \"my-cluster\""),
        ("system", "name", " my-cluster ", "name = \"my-cluster\""),
        ("system", "name", "team #1", "name = \"team #1\""),
        ("system", "name", "#1 cluster", "name = \"#1 cluster\""),
        (
            "system",
            "name",
            " # only comment",
            "name = \"# only comment\"",
        ),
        ("system", "name", "007", "name = \"007\""),
        ("cluster", "host", "1e5", "host = \"1e5\""),
        (
            "defaults.mailbox",
            "strategy",
            " drop_new ",
            "strategy = \"drop_new\"",
        ),
    ];
    for (section, key, text, want) in cases {
        let Read::Printed(lines) = from_env(section, key, text) else {
            panic!("{section}.{key} = {text:?} refused from the environment");
        };
        assert_eq!(printed(&lines, section, key), Some(want), "{text:?}");
    }
    // The file wants quotes.
    assert!(matches!(
        from_file("system", "name", "my-cluster"),
        Read::Refused(_)
    ));
}

/// Two variables TOML refuses: one line, naming the first key and its
/// variable (not "unknown source" for the second).
#[test]
fn two_refused_variables_give_one_line_naming_the_first() {
    let read = print_config("two", |cmd| {
        cmd.env("CASTY_SYSTEM__NAME", "\"abc");
        cmd.env("CASTY_CLUSTER__PORT", "007");
    });
    let Read::Refused(line) = read else {
        panic!("accepted: {read:?}");
    };
    assert!(
        line.starts_with("error: configuration: cluster.port: \"007\"")
            && line.ends_with("(from environment variable CASTY_CLUSTER__PORT)"),
        "{line}"
    );
}

/// A value nested thousands of `[` or `{` deep overflowed the stack in
/// figment's parser and aborted the process (exit 134, at about 1,500
/// levels): refused before figment reads it, one line naming the key and
/// the variable, whatever the key and whether the brackets close; a list
/// is still read.
#[test]
fn a_deeply_nested_environment_value_is_refused_not_a_crash() {
    let deep = [
        ("CASTY_CLUSTER__PORT", "[".repeat(3000)),
        (
            "CASTY_CLUSTER__PORT",
            format!("{}1{}", "[".repeat(3000), "]".repeat(3000)),
        ),
        ("CASTY_SYSTEM__NAME", "{a=".repeat(3000)),
        ("CASTY_CLUSTER__SEED_NODES", "[".repeat(3000)),
        ("CASTY_NO_SUCH__KEY", "[".repeat(3000)),
    ];
    for (var, value) in deep {
        let read = print_config("deep", |cmd| {
            cmd.env(var, &value);
        });
        let Read::Refused(line) = read else {
            panic!("{var}: accepted: {read:?}");
        };
        assert!(
            line.contains("levels deep, above 64")
                && line.ends_with(&format!("(from environment variable {var})")),
            "{var}: {line}"
        );
    }
    assert_same(&[(
        "cluster",
        "seed_nodes",
        "['10.0.0.1:25520']",
        Some("seed_nodes = [\"10.0.0.1:25520\"]"),
    )]);
}

/// A whole number written as a float (`port = 25521.0`, `1e6`) is refused
/// saying a float was found: the message read "found 25521, expected a
/// whole number", as if a whole number had been found.
#[test]
fn a_whole_number_written_as_a_float_is_named_a_float() {
    for (section, key, text, found) in [
        (
            "cluster",
            "port",
            "25521.0",
            "found 25521.0 (a number with a fraction or exponent)",
        ),
        (
            "transport",
            "max_frame_bytes",
            "1e6",
            "found 1000000.0 (a number with a fraction or exponent)",
        ),
    ] {
        for read in [from_file(section, key, text), from_env(section, key, text)] {
            let Read::Refused(line) = read else {
                panic!("{section}.{key} = {text}: accepted: {read:?}");
            };
            assert!(
                line.contains(&format!(
                    "{section}.{key}: {found}, expected a whole number"
                )),
                "{line}"
            );
        }
    }
}

/// figment reads `CASTY_` names in any case: of `CASTY_cluster__port=abc`
/// and `CASTY_CLUSTER__PORT=1` it kept one value and dropped the other
/// unread (the port read 1, "abc" silently ignored). Two spellings of one
/// key are refused, one line naming both.
#[test]
fn two_spellings_of_one_key_are_refused_naming_both() {
    let read = print_config("spellings", |cmd| {
        cmd.env("CASTY_cluster__port", "abc");
        cmd.env("CASTY_CLUSTER__PORT", "1");
    });
    let Read::Refused(line) = read else {
        panic!("accepted: {read:?}");
    };
    assert!(
        line.contains("cluster.port: set by 2 environment variables")
            && line.contains("\"CASTY_CLUSTER__PORT\" and \"CASTY_cluster__port\""),
        "{line}"
    );
}

/// A cluster name holding a control character (a newline, an escape) ran
/// (shown escaped in every log line, but no name needs one): refused, one
/// line naming the key and its source, from the file and the environment.
#[test]
fn a_cluster_name_with_a_control_character_is_refused() {
    for text in ["\"abc\\nother = 1\"", "\"a\\u001b[31m\"", "\"tab\\there\""] {
        let Read::Refused(line) = from_file("system", "name", text) else {
            panic!("{text}: accepted from the file");
        };
        assert!(line.contains("control character"), "{line}");
    }
    let Read::Refused(line) = from_env("system", "name", "abc\nother = 1") else {
        panic!("accepted from the environment");
    };
    assert!(
        line.contains("control character") && line.contains("CASTY_SYSTEM__NAME"),
        "{line}"
    );
}
