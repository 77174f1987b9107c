//! The node raises its open-files soft limit (RLIMIT_NOFILE) to the hard
//! limit at start and logs both values.

use std::process::Command;
use std::time::Instant;

use casty_tests::Process;

use crate::{START, node_cmd};

#[cfg(unix)]
#[test]
fn a_node_raises_its_open_files_soft_limit_and_logs_it() {
    let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
    let lowered = hard.min(256);
    // Start the node under a lowered soft limit, as a default shell's
    // `ulimit -n` would: `sh` lowers it, then becomes the node (exec).
    let node = node_cmd("nofile", &["--port", "0"]);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -Sn {lowered} && exec \"$0\" \"$@\""))
        .arg(node.get_program())
        .args(node.get_args());
    if let Some(dir) = node.get_current_dir() {
        cmd.current_dir(dir);
    }
    for (key, value) in node.get_envs() {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    let p = Process::spawn("nofile", cmd).unwrap();
    let line = p
        .stderr()
        .wait_for(Instant::now() + START, |l| {
            l.contains("open-files soft limit")
        })
        .unwrap_or_else(|| panic!("no open-files line: {:?}", p.stderr().snapshot()));
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains(&format!("old={lowered}")), "{line}");
    assert!(line.contains(&format!("hard={hard}")), "{line}");
    if cfg!(target_os = "linux") {
        assert!(line.contains(&format!("new={hard}")), "{line}");
    }
}
