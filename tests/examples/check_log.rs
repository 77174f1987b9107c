//! Checks node-cli's logged results against values computed here: reads
//! log lines on stdin (one node's log, or `./run-local.sh`'s labelled mix
//! of three), and for every `job-<node>-<i>: <result> (on <node>)` line
//! computes the seed's function of the payload `doc-<task id>` with
//! [`casty_tests::expected_result`] (plain `sha2`, not the nodes' code).
//! Prints one line per wrong result and a summary; exits 1 when a result
//! is wrong or none was found.
//!
//! ```text
//! ./run-local.sh 2>&1 | cargo run -p casty-tests --example check_log
//! cargo run -p casty-tests --example check_log -- 200 < node.log   # --iterations 200
//! ```

use std::io::BufRead;

use casty_tests::{expected_result, seed_log};

fn main() {
    let iterations: u32 = match std::env::args().nth(1) {
        None => 500,
        Some(arg) => match arg.parse() {
            Ok(n) if n >= 1 => n,
            _ => {
                eprintln!("iterations must be a whole number from 1, not {arg:?}");
                std::process::exit(2);
            }
        },
    };
    let (mut checked, mut wrong) = (0u64, 0u64);
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else {
            eprintln!("stdin is not UTF-8 text; stopped reading");
            break;
        };
        let Some(r) = seed_log::task_result(&line) else {
            continue;
        };
        checked += 1;
        let want = expected_result(format!("doc-{}", r.task).as_bytes(), iterations);
        if r.result != want {
            wrong += 1;
            println!(
                "{}: logged {} (on {}), expected {want}",
                r.task, r.result, r.on
            );
        }
    }
    println!("{checked} results checked at {iterations} iterations, {wrong} wrong");
    if wrong > 0 || checked == 0 {
        std::process::exit(1);
    }
}
