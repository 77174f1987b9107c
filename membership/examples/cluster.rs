//! A cluster node that uses only `transport` and `membership`: it joins
//! through its seeds and prints every change of its view as one
//! machine-readable line until Ctrl-C, then leaves gracefully.
//!
//! ```sh
//! cargo run -p membership --example cluster -- --name a --listen 127.0.0.1:7000
//! cargo run -p membership --example cluster -- --name b --listen 127.0.0.1:7001 --seeds 127.0.0.1:7000
//! cargo run -p membership --example cluster -- --name c --listen 127.0.0.1:7002 --seeds 127.0.0.1:7000
//! ```
//!
//! Flags (node mode):
//!
//! - `--name <name>`: member name (required).
//! - `--listen <host:port>`: address to bind (default `127.0.0.1:0`: a free
//!   port); the advertised address is `<host>:<bound port>`.
//! - `--seeds <a,b,..>`: comma-separated seed addresses (default: none, so
//!   this node starts a cluster).
//! - `--generation <n>`: this life's generation (default: the start time in
//!   Unix milliseconds, so a restart is a newer life).
//!
//! Output, one line each (`<unix_ms>` is the wall clock in milliseconds
//! when the line was printed, so lines of several processes compare):
//!
//! - stderr `listening on <bound addr> (advertised as <addr>)` once bound;
//! - stdout `JOINED <unix_ms> <name>` once joined;
//! - stdout `VIEW <unix_ms> <name> active=<m>@<generation>,..` at start and
//!   whenever the set of active (alive or suspect) lives changes, sorted by
//!   name, ourselves included;
//! - stdout `EVENT <unix_ms> <name> <up|suspect|alive|down|left|..> <member>`
//!   for each membership event;
//! - stdout `LEFT <unix_ms> <name>` after a graceful leave (Ctrl-C);
//! - stderr `error: ..` and exit status 1 when the flags are wrong or the
//!   join fails (no seed answered within `join_deadline_ms`, every seed is
//!   of another cluster, or a seed refused the join).
//!
//! `RUST_LOG` (default `warn`; `error` in the demo below, whose stopped
//! node the others would warn about) sets the log filter; logs go to
//! stderr. A node that starts the cluster may join before its event
//! stream is subscribed: its `JOINED` line is printed all the same, its
//! `EVENT .. local Joined` line may not be.
//!
//! With no argument it runs a self-contained demo: three nodes in this
//! process form a cluster, one stops without leaving and the others see it
//! suspect and then down.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use membership::{Event, MembershipConfig, MembershipHandle, View};
use tokio_util::sync::CancellationToken;
use transport::{LocalNode, Transport, TransportConfig};

/// The flags of node mode.
#[derive(Debug)]
struct Flags {
    name: String,
    listen: String,
    seeds: Vec<String>,
    generation: Option<u64>,
}

fn parse_flags(args: &[String]) -> anyhow::Result<Flags> {
    let mut name = None;
    let mut listen = "127.0.0.1:0".to_owned();
    let mut seeds = Vec::new();
    let mut generation = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--name" => name = Some(value()?),
            "--listen" => listen = value()?,
            "--seeds" => {
                seeds = value()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "--generation" => {
                let v = value()?;
                generation = Some(
                    v.parse()
                        .with_context(|| format!("--generation {v:?} is not a u64"))?,
                );
            }
            other => {
                bail!("unknown flag {other:?} (expected --name, --listen, --seeds, --generation)")
            }
        }
    }
    let name = name.context("--name is required")?;
    Ok(Flags {
        name,
        listen,
        seeds,
        generation,
    })
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Binds the transport and starts membership; `seeds` empty means this
/// node starts a cluster (its own address is its seed).
async fn start(
    listen: &str,
    name: &str,
    seeds: Vec<String>,
    generation: Option<u64>,
    stop: &CancellationToken,
) -> anyhow::Result<(Transport, MembershipHandle)> {
    let (host, _) = listen
        .rsplit_once(':')
        .with_context(|| format!("--listen {listen:?} is not host:port"))?;
    let transport = Transport::bind(
        LocalNode {
            cluster: "membership-example".into(),
            settings: String::new(),
            name: name.into(),
            generation: generation.unwrap_or_else(unix_ms),
            listen: listen.into(),
            advertise_host: host.into(),
        },
        TransportConfig::default(),
        stop.clone(),
    )
    .await?;
    let seeds = if seeds.is_empty() {
        vec![transport.identity().addr.clone()]
    } else {
        seeds
    };
    let members = membership::start(&transport, MembershipConfig::default(), seeds, stop.clone())?;
    Ok((transport, members))
}

/// The active lives of `view`: name -> generation.
fn active(view: &View) -> BTreeMap<String, u64> {
    view.active()
        .map(|m| (m.id.name.clone(), m.id.generation))
        .collect()
}

fn view_line(name: &str, active: &BTreeMap<String, u64>) -> String {
    let members: Vec<String> = active.iter().map(|(n, g)| format!("{n}@{g}")).collect();
    format!("VIEW {} {name} active={}", unix_ms(), members.join(","))
}

fn event_line(who: &str, ev: &Event) -> String {
    let (kind, subject) = match ev {
        Event::MemberUp(m) => ("up", m.id.to_string()),
        Event::MemberSuspect(m) => ("suspect", m.id.to_string()),
        Event::MemberAlive(m) => ("alive", m.id.to_string()),
        Event::MemberDown(m) => ("down", m.id.to_string()),
        Event::MemberLeft(m) => ("left", m.id.to_string()),
        Event::MemberUpdated(m) => ("updated", m.id.to_string()),
        other => ("local", format!("{other:?}")),
    };
    format!("EVENT {} {who} {kind} {subject}", unix_ms())
}

/// Node mode: run one member until Ctrl-C or until membership stops.
async fn node(flags: Flags) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let (transport, members) = start(
        &flags.listen,
        &flags.name,
        flags.seeds,
        flags.generation,
        &stop,
    )
    .await?;
    eprintln!(
        "listening on {} (advertised as {})",
        transport.local_addr(),
        transport.identity().addr
    );
    let name = flags.name;
    let mut events = members.subscribe();
    let mut view = members.watch_view();
    let mut last = active(&view.borrow_and_update());
    println!("{}", view_line(&name, &last));
    let joined = members.wait_joined(Duration::from_secs(60));
    tokio::pin!(joined);
    let mut waiting_join = true;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            r = &mut joined, if waiting_join => {
                r.context("joining")?;
                waiting_join = false;
                println!("JOINED {} {name}", unix_ms());
            }
            ev = events.recv() => match ev {
                Ok(ev) => println!("{}", event_line(&name, &ev)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("{n} events missed");
                }
                Err(_) => break,
            },
            changed = view.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = active(&view.borrow_and_update());
                if now != last {
                    println!("{}", view_line(&name, &now));
                    last = now;
                }
            }
        }
    }
    members.leave(Duration::from_secs(5)).await?;
    println!("LEFT {} {name}", unix_ms());
    stop.cancel();
    Ok(())
}

/// Demo: three nodes in this process; c stops without leaving.
async fn demo() -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let local = "127.0.0.1:0";
    let (a, ma) = start(local, "a", Vec::new(), None, &stop).await?;
    let seed = vec![a.identity().addr.clone()];
    let stop_c = stop.child_token();
    let (_b, mb) = start(local, "b", seed.clone(), None, &stop).await?;
    let (c, mc) = start(local, "c", seed, None, &stop_c).await?;
    let mut events = ma.subscribe();
    for m in [&ma, &mb, &mc] {
        m.wait_for(3, Duration::from_secs(10)).await?;
    }
    println!("{}", view_line("a", &active(&ma.view())));
    stop_c.cancel();
    c.shutdown().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Ok(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
        println!("{}", event_line("a", &ev));
        if matches!(ev, Event::MemberDown(ref m) if m.id.name == "c") {
            break;
        }
    }
    stop.cancel();
    Ok(())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The demo stops a node on purpose: the others' warnings about
    // reaching it are what the demo shows as events, so by default only
    // errors are logged there.
    let default_filter = if args.is_empty() { "error" } else { "warn" };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal, not in a redirected file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let result = if args.is_empty() {
        demo().await
    } else {
        match parse_flags(&args) {
            Ok(flags) => node(flags).await,
            Err(e) => Err(e),
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
