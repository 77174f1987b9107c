//! The node's configuration, layered with figment: built-in defaults <
//! `casty.toml` < `CASTY_*` environment (`__` nests: `CASTY_CLUSTER__PORT`)
//! < command-line flags. Unknown keys and bad values are errors naming the
//! key and where it came from.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use membership::{MembershipConfig, SeedTimings};
use serde::{Deserialize, Serialize};
use sharding::{MailboxConfig, RegionConfig, ShardingConfig, ShardingDefaults};
use taskqueue::TasksConfig;
use transport::TransportConfig;

use crate::cli::Cli;

/// The whole `casty.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[system]`.
    pub system: SystemSection,
    /// `[cluster]` and its subsections.
    pub cluster: ClusterSection,
    /// `[node]`.
    pub node: NodeSection,
    /// `[defaults]` (the seed's `[defaults.sharding]`, `[defaults.mailbox]`).
    pub defaults: DefaultsSection,
    /// `[transport]`.
    pub transport: TransportConfig,
    /// `[sharding]`.
    pub sharding: ShardingConfig,
    /// `[tasks]`.
    pub tasks: TasksConfig,
}

/// `[system]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SystemSection {
    /// The cluster's name; nodes of another cluster are refused at the handshake.
    pub name: String,
}

impl Default for SystemSection {
    fn default() -> Self {
        SystemSection {
            name: "task-queue".into(),
        }
    }
}

/// `[node]`: this node's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Unique node name (`--name`); empty means the default (see `--help`).
    pub name: String,
    /// Address to bind (`--bind-host`); empty means `[cluster] host`.
    pub bind_host: String,
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// Identity host peers dial (`--host`; `auto` resolves the hostname).
    pub host: String,
    /// Listen port (`--port`; 0 = any free port).
    pub port: u16,
    /// Seeds to join through (`--seed`).
    pub seed_nodes: Vec<String>,
    /// `[cluster.gossip]`.
    pub gossip: GossipSection,
    /// `[cluster.heartbeat]`.
    pub heartbeat: HeartbeatSection,
    /// `[cluster.failure_detector]`.
    pub failure_detector: FailureDetectorSection,
    /// `[cluster.membership]`: SWIM settings without a seed key.
    pub membership: MembershipConfig,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            host: "127.0.0.1".into(),
            port: 25520,
            seed_nodes: Vec::new(),
            gossip: GossipSection::default(),
            heartbeat: HeartbeatSection::default(),
            failure_detector: FailureDetectorSection::default(),
            membership: MembershipConfig::default(),
        }
    }
}

/// `[cluster.gossip]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GossipSection {
    /// Seconds between anti-entropy push-pull rounds.
    pub interval: f64,
}

impl Default for GossipSection {
    fn default() -> Self {
        GossipSection { interval: 1.0 }
    }
}

/// `[cluster.heartbeat]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatSection {
    /// Seconds per SWIM protocol period (one probe each).
    pub interval: f64,
    /// Seconds of the minimum suspicion timeout.
    pub availability_check_interval: f64,
}

impl Default for HeartbeatSection {
    fn default() -> Self {
        HeartbeatSection {
            interval: 0.5,
            availability_check_interval: 2.0,
        }
    }
}

/// `[cluster.failure_detector]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailureDetectorSection {
    /// Scales the suspicion timeout (the seed's phi threshold, 8.0).
    pub threshold: f64,
}

impl Default for FailureDetectorSection {
    fn default() -> Self {
        FailureDetectorSection { threshold: 8.0 }
    }
}

/// `[defaults]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DefaultsSection {
    /// `[defaults.sharding]`.
    pub sharding: ShardingDefaults,
    /// `[defaults.mailbox]`.
    pub mailbox: MailboxConfig,
}

/// Longest cluster name (`[system] name`), in bytes. The transport's
/// `Hello`, the first frame of every connection, carries the cluster name
/// beside the magic and version (6 bytes), the dialer's name (at most 128
/// bytes) and address (at most 259), its generation and lane, and the
/// cluster settings (under 100 bytes: `num_shards=.. replication_factor=..
/// max_frame_bytes=..`), and a handshake frame holds at most 16 KiB
/// (`transport`'s `HANDSHAKE_MAX_FRAME_BYTES`): with a name of about 16 KB
/// the `Hello` did not fit and no node could join. 1,024 bytes keeps the
/// `Hello` under 1.6 KB, far inside the frame, and is far above any name a
/// cluster needs.
pub const MAX_CLUSTER_NAME_BYTES: usize = 1024;

/// A configuration error: one line naming the key and its source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where each effective value came from (the file, a `CASTY_` variable, a
/// flag, the defaults), for checks made after [`Config::load`].
pub struct Sources(Figment);

impl Sources {
    /// Appends to `msg` the source of each dotted key it names, key by
    /// key (the message may be about a flag checked against the key):
    /// `tasks.max_task_id_bytes = 3 is ... (tasks.max_task_id_bytes from
    /// environment variable CASTY_TASKS__MAX_TASK_ID_BYTES)`.
    pub fn annotate(&self, msg: String) -> String {
        with_sources(&self.0, msg, true)
    }
}

impl Config {
    /// Layers defaults, the config file, `CASTY_*` and the flags; gives
    /// the configuration and where its values came from.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key and its source for an unknown key, a
    /// bad value, an unreadable or missing explicit file, or a value that
    /// breaks an invariant.
    pub fn load(cli: &Cli) -> Result<(Config, Sources), ConfigError> {
        let path: Option<PathBuf> = match &cli.config {
            Some(p) => {
                if !p.is_file() {
                    return Err(ConfigError(format!(
                        "config file {}: cannot read it (missing or not a file)",
                        p.display()
                    )));
                }
                Some(p.clone())
            }
            // Anything there (a directory too) is read, and fails clearly.
            None => Some(PathBuf::from("casty.toml")).filter(|p| p.exists()),
        };
        if let Some(p) = &path {
            // figment reports a TOML syntax error without the file name.
            let text = std::fs::read_to_string(p)
                .map_err(|e| ConfigError(format!("config file {}: {e}", p.display())))?;
            if let Err(e) = text.parse::<toml::Table>() {
                // toml's message: a location line, the source excerpt, then
                // the reason; keep the location and the reason, on one line,
                // with the key of that line when it has one (a number too
                // large for TOML is refused here, before any key is known).
                let key = e
                    .span()
                    .and_then(|span| key_at(&text, span.start))
                    .map(|k| format!(" ({k})"))
                    .unwrap_or_default();
                let text = e.to_string();
                let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
                let location = lines.next().unwrap_or("invalid TOML");
                let reason = text
                    .lines()
                    .map(str::trim)
                    .rfind(|l| !l.is_empty() && !l.starts_with('|') && !l.contains(" | "))
                    .filter(|r| *r != location)
                    .unwrap_or("");
                return Err(ConfigError(format!(
                    "config file {}: {location}{key}{}{reason}",
                    p.display(),
                    if reason.is_empty() { "" } else { ": " },
                )));
            }
        }
        let mut fig = Figment::from(defaults());
        if let Some(p) = &path {
            fig = fig.merge(Toml::file_exact(p));
            // The file's own values are checked before the layers above
            // it: a flag for `cluster.port` replaces a `cluster = 5` that
            // would otherwise go unnoticed.
            fig.extract::<Config>()
                .map_err(|e| ConfigError(describe(&e)))?;
        }
        // Figment skips a variable whose name has an empty key in it
        // (`CASTY_CLUSTER____PORT`, `CASTY_`): refused here, not ignored.
        let names = std::env::vars_os().map(|(k, _)| k);
        if let Some(var) = malformed_env_names(names).into_iter().next() {
            return Err(ConfigError(format!(
                "environment variable {var:?}: not a configuration key: after CASTY_ come the key's parts joined by `__`, none of them empty, with no `.` or space (CASTY_CLUSTER__PORT for cluster.port)"
            )));
        }
        // figment reads names in any case, and one of two spellings of a
        // key would be dropped unread: refused here, naming both.
        let names = std::env::vars_os().map(|(k, _)| k);
        if let Some(line) = env_names_of_one_key(names).into_iter().next() {
            return Err(ConfigError(line));
        }
        // figment parses every `CASTY_` value with a parser that recurses
        // once per `[` or `{` without a limit: refused here, before it runs.
        if let Some(line) = deep_env_values(std::env::vars_os()).into_iter().next() {
            return Err(ConfigError(line));
        }
        fig = fig.merge(EnvLayer::new()?);
        // Checked before the flags too, as the file is: a bad
        // `CASTY_CLUSTER__PORT` under `--port` is still an error.
        fig.extract::<Config>()
            .map_err(|e| ConfigError(describe(&e)))?;
        fig = merge_flags(fig, cli);
        let config: Config = fig.extract().map_err(|e| ConfigError(describe(&e)))?;
        // TOML integers stop at i64::MAX: a larger value (possible from
        // `CASTY_*`) could not be printed (`--print-config`) nor written
        // back to a file.
        if let Some(key) = figment::Provider::data(&fig).ok().and_then(|profiles| {
            profiles
                .values()
                .find_map(|dict| dict.iter().find_map(|(k, v)| key_above_toml(v, k.clone())))
        }) {
            return Err(ConfigError(with_source(
                &fig,
                format!("{key} is above {}, the largest TOML integer", i64::MAX),
            )));
        }
        config
            .validate()
            .map_err(|ConfigError(msg)| ConfigError(with_source(&fig, msg)))?;
        Ok((config, Sources(fig)))
    }

    /// Checks every section's invariants.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.system.name.is_empty() {
            return Err(ConfigError("system.name must not be empty".into()));
        }
        let len = self.system.name.len();
        if len > MAX_CLUSTER_NAME_BYTES {
            return Err(ConfigError(format!(
                "system.name is {len} bytes, above {MAX_CLUSTER_NAME_BYTES}: every connection's handshake carries it in one frame of at most 16 KiB (the transport's limit)"
            )));
        }
        // Shown in refusals on both sides of a handshake (escaped there),
        // and no control character belongs in a name.
        if let Some(c) = self.system.name.chars().find(|c| c.is_control()) {
            return Err(ConfigError(format!(
                "system.name {:?} holds the control character {c:?}: not allowed in a cluster name",
                self.system.name
            )));
        }
        if self.cluster.host.is_empty() {
            return Err(ConfigError("cluster.host must not be empty".into()));
        }
        if !self.node.name.is_empty() {
            check_name(&self.node.name).map_err(|e| ConfigError(format!("node.name: {e}")))?;
        }
        // The address every peer's handshake checks (before is_any_address,
        // which shows the host: refused here, it is shown escaped).
        check_host(&self.cluster.host, self.cluster.port)
            .map_err(|e| ConfigError(format!("cluster.host: {e}")))?;
        if !self.node.bind_host.is_empty() {
            check_host(&self.node.bind_host, self.cluster.port).map_err(|e| {
                let e = e.replacen("node address", "bind address", 1);
                ConfigError(format!("node.bind_host: {e}"))
            })?;
        }
        // The address peers dial: "any address" would make each dial itself.
        if is_any_address(&self.cluster.host) {
            return Err(ConfigError(format!(
                "cluster.host = {} is not an address peers can dial (it means any address): listen on every interface with --bind-host {} and give --host this machine's reachable address (or auto)",
                self.cluster.host, self.cluster.host
            )));
        }
        for seed in &self.cluster.seed_nodes {
            check_host_port(seed).map_err(|e| ConfigError(format!("cluster.seed_nodes: {e}")))?;
        }
        self.membership().map_err(membership_error)?;
        // Every node publishes the workload marker as its metadata.
        let (max, marker) = (
            self.cluster.membership.max_metadata_bytes,
            crate::workload::WORKLOAD_MARKER.len(),
        );
        if max < marker {
            return Err(ConfigError(format!(
                "cluster.membership.max_metadata_bytes = {max} is below {marker}: every node publishes node-cli's workload marker ({marker} bytes) as its metadata"
            )));
        }
        self.transport.validate().map_err(ConfigError)?;
        // Across layers: a push-pull sync travels in one frame.
        let (sync, frame) = (
            self.cluster.membership.max_sync_bytes,
            self.transport.max_frame_bytes,
        );
        if sync > frame {
            return Err(ConfigError(format!(
                "cluster.membership.max_sync_bytes ({sync} bytes) must be at most transport.max_frame_bytes ({frame} bytes): a push-pull sync is sent in one frame"
            )));
        }
        self.region().validate().map_err(ConfigError)?;
        // Its message names the key (`tasks.result_timeout_ms: ...`).
        self.tasks
            .validate()
            .map_err(|e| ConfigError(e.to_string()))?;
        // Across layers: the largest task travels in one frame.
        self.tasks
            .check_frame_limit(self.transport.max_frame_bytes as u64)
            .map_err(|e| ConfigError(e.to_string()))?;
        Ok(())
    }

    /// The membership settings: `[cluster.membership]` with the seed keys
    /// (`[cluster.gossip]`, `[cluster.heartbeat]`, `[cluster.failure_detector]`) applied.
    ///
    /// # Errors
    /// The membership crate's error for an out-of-range seed key.
    pub fn membership(&self) -> Result<MembershipConfig, membership::ConfigError> {
        let seed = SeedTimings {
            gossip_interval_s: self.cluster.gossip.interval,
            heartbeat_interval_s: self.cluster.heartbeat.interval,
            availability_check_interval_s: self.cluster.heartbeat.availability_check_interval,
            failure_detector_threshold: self.cluster.failure_detector.threshold,
        };
        self.cluster.membership.clone().with_seed(&seed)
    }

    /// The region settings.
    pub fn region(&self) -> RegionConfig {
        RegionConfig {
            defaults: self.defaults.sharding.clone(),
            mailbox: self.defaults.mailbox.clone(),
            sharding: self.sharding.clone(),
        }
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

/// Checks a node name with the transport's identity rule
/// ([`transport::check_identity`], which every peer applies to it at the
/// handshake and membership to names it learns): at most
/// `MAX_NAME_BYTES` bytes, and no whitespace, control, invisible or
/// blank characters nor noncharacters, which would split, shift or hide
/// the fields of every log line (`time level node target: message`), no
/// combining mark first (it would join the character before it), nor `@`
/// or `#` (a member shows as `name@address#generation`), nor empty.
///
/// # Errors
/// One line saying what is wrong with the name.
pub fn check_name(name: &str) -> Result<(), String> {
    transport::check_identity(transport::IdentityField::Name, name).map_err(|e| e.to_string())
}

/// Checks a host with the transport's identity rule
/// ([`transport::check_identity`], [`transport::IdentityField::Addr`]) on
/// `host:port` as the transport forms the address it advertises (an IPv6
/// literal in brackets), so that a host peers would refuse (whitespace, a
/// control or invisible character, `@`, `#`, more than
/// [`transport::MAX_ADDR_BYTES`] with its port) is a configuration error
/// rather than a failure at start, or a lookup that logs it raw. Port 0
/// is also checked as 65535 for the length: the bound port is not known
/// yet, and may take five digits. `auto` (resolved at start to an IP
/// address) passes.
///
/// # Errors
/// The identity error, the value escaped.
fn check_host(host: &str, port: u16) -> Result<(), String> {
    let addr = |port: u16| {
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    };
    let check = |addr: &str| transport::check_identity(transport::IdentityField::Addr, addr);
    check(&addr(port)).map_err(|e| e.to_string())?;
    if port == 0 {
        check(&addr(u16::MAX)).map_err(|e| format!("{e} (port 0 counted as five digits)"))?;
    }
    Ok(())
}

/// Whether `host` names "any address": 0.0.0.0 or ::, also in the forms
/// the system's resolver reads as them (`0`, `0.0`, `0x0`,
/// `::ffff:0.0.0.0`, `[::]`).
fn is_any_address(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ip.to_canonical().is_unspecified();
    }
    // inet_aton's shorter forms: one to four parts, each a zero (decimal,
    // octal or hex).
    let parts: Vec<&str> = host.split('.').collect();
    parts.len() <= 4
        && parts.iter().all(|part| {
            let digits = part
                .strip_prefix("0x")
                .or_else(|| part.strip_prefix("0X"))
                .unwrap_or(part);
            !digits.is_empty() && digits.bytes().all(|b| b == b'0')
        })
}

/// Checks a `host:port` seed address.
///
/// # Errors
/// A message when the port is missing, not a number, or 0.
pub fn check_host_port(addr: &str) -> Result<(), String> {
    match addr.rsplit_once(':') {
        // An IPv6 address takes brackets: `::1` alone would read as host
        // `:` and port 1.
        Some((host, _))
            if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) =>
        {
            Err(format!(
                "{addr:?} is not host:port (an IPv6 address goes in brackets, for example [::1]:25520)"
            ))
        }
        // Digits only: `u16`'s parse would take a leading `+`.
        Some((_, port)) if !port.bytes().all(|b| b.is_ascii_digit()) => Err(format!(
            "{addr:?} is not host:port (for example 127.0.0.1:25520)"
        )),
        Some((host, port)) if !host.is_empty() => match port.parse::<u16>() {
            Ok(0) => Err(format!(
                "{addr:?}: port 0 is not a port anyone listens on (a seed is host:port, for example 127.0.0.1:25520)"
            )),
            Ok(_) => Ok(()),
            // Digits, but too many for a port.
            Err(_) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => Err(format!(
                "{addr:?}: port {port} is out of range (a port is 1 to 65535)"
            )),
            Err(_) => Err(format!(
                "{addr:?} is not host:port (for example 127.0.0.1:25520)"
            )),
        },
        _ => Err(format!(
            "{addr:?} is not host:port (for example 127.0.0.1:25520)"
        )),
    }
}

fn merge_flags(mut fig: Figment, cli: &Cli) -> Figment {
    if let Some(port) = cli.port {
        fig = fig.merge(flag("--port", "cluster.port", port));
    }
    if let Some(host) = &cli.host {
        fig = fig.merge(flag("--host", "cluster.host", host));
    }
    if let Some(bind) = &cli.bind_host {
        fig = fig.merge(flag("--bind-host", "node.bind_host", bind));
    }
    if let Some(name) = &cli.name {
        fig = fig.merge(flag("--name", "node.name", name));
    }
    if !cli.seeds.is_empty() {
        fig = fig.merge(flag("--seed", "cluster.seed_nodes", &cli.seeds));
    }
    fig
}

/// The `CASTY_*` environment, each value read as the same text after
/// `key = ` in `casty.toml` would be: whitespace around it and a trailing
/// `# comment` are not part of it, quotes are TOML's (`"abc"` and `'abc'`
/// are the text abc), numbers are TOML's (`5e-1`, `1_000`, `0x10`, `inf`),
/// and text TOML refuses (`007`, `.5`, `"abc`, `[a:1]`) is refused, naming
/// the variable. One exception: a key whose default is text also takes
/// unquoted text as that text, all of it but the spaces around it
/// (`my-cluster`, a host `1e5`, a name `inf`, `team #1`: no comment in
/// it, where cutting at a `#` would change a cluster name without a
/// word). figment's `Env` would read `007` as 7,
/// keep `'abc'` with its quotes and refuse `25520 # c` for a number key.
///
/// Left as figment's `Env` reads them, so their errors stay figment's: a
/// key the configuration does not have (unknown key), a number too large
/// for TOML (`1e999`, `18446744073709551615`: out of range).
struct EnvLayer {
    env: Env,
    /// The built-in defaults, whose values give each key's type.
    defaults: figment::value::Value,
}

impl EnvLayer {
    /// The `CASTY_` variables, `__` nesting keys.
    ///
    /// # Errors
    /// Serializing the built-in defaults fails (it does not: they are
    /// plain structs of numbers and text).
    fn new() -> Result<EnvLayer, ConfigError> {
        let data = figment::Provider::data(&defaults()).map_err(|e| ConfigError(describe(&e)))?;
        let defaults = data
            .get(&figment::Profile::Default)
            .cloned()
            .unwrap_or_default();
        Ok(EnvLayer {
            env: Env::prefixed("CASTY_").split("__"),
            defaults: defaults.into(),
        })
    }
}

impl figment::Provider for EnvLayer {
    fn metadata(&self) -> figment::Metadata {
        self.env.metadata()
    }

    /// # Errors
    /// A value TOML refuses, at its key (the first such key).
    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        use figment::value::Value;
        let mut data = self.env.data()?;
        let mut refused: Option<(String, String)> = None;
        for (key, raw) in self.env.iter() {
            // Only where this variable's value is the one figment kept
            // (not a table merged from `CASTY_A__B` and `CASTY_A__B__C`,
            // nor a value another spelling of the name replaced).
            let ours = raw.parse::<Value>().ok();
            let mut slots = data
                .values_mut()
                .filter_map(|dict| leaf_mut(dict, key.as_str()))
                .filter(|slot| Some(&**slot) == ours.as_ref())
                .peekable();
            match env_value(self.defaults.find_ref(key.as_str()), &raw) {
                Ok(None) => {}
                Ok(Some(value)) => slots.for_each(|slot| *slot = value.clone()),
                // The first key in order: figment names the source of a
                // provider's error only, not of errors chained to it.
                Err(reason)
                    if slots.peek().is_some()
                        && refused
                            .as_ref()
                            .is_none_or(|(first, _)| key.as_str() < first.as_str()) =>
                {
                    refused = Some((key.as_str().to_owned(), reason));
                }
                Err(_) => {}
            }
        }
        match refused {
            Some((key, reason)) => Err(figment::Error::from(reason).with_path(&key)),
            None => Ok(data),
        }
    }
}

/// The value at dotted `key` in `dict`.
fn leaf_mut<'a>(
    dict: &'a mut figment::value::Dict,
    key: &str,
) -> Option<&'a mut figment::value::Value> {
    let (parent, last) = match key.rsplit_once('.') {
        Some((parent, last)) => (Some(parent), last),
        None => (None, key),
    };
    let mut dict = dict;
    if let Some(parent) = parent {
        for part in parent.split('.') {
            match dict.get_mut(part)? {
                figment::value::Value::Dict(_, inner) => dict = inner,
                _ => return None,
            }
        }
    }
    dict.get_mut(last)
}

/// The value environment text `raw` gives a key whose built-in default is
/// `default` (see [`EnvLayer`]): `Ok(Some)` the value, `Ok(None)` to keep
/// figment's reading (a key the configuration does not have, a number too
/// large for TOML).
///
/// # Errors
/// Why TOML refuses the text, on one line.
fn env_value(
    default: Option<&figment::value::Value>,
    raw: &str,
) -> Result<Option<figment::value::Value>, String> {
    use figment::value::Value;
    let Some(default) = default else {
        return Ok(None);
    };
    let text = raw.trim();
    let unquoted_text = matches!(default, Value::String(..)) && !text.starts_with(['"', '\'']);
    match toml_value(text) {
        Ok(toml::Value::String(s)) => Ok(Some(Value::from(s))),
        _ if unquoted_text => Ok(Some(Value::from(unquoted(text).to_owned()))),
        Ok(value) => <Value as serde::Deserialize>::deserialize(value)
            .map(Some)
            .map_err(|e| format!("{text:?}: {e}")),
        // A word (`abc`), or nothing: text, so the error says what the key
        // takes ("found the text \"abc\", expected a whole number ...").
        Err(_) if text.is_empty() || text.starts_with(|c: char| c.is_ascii_alphabetic()) => {
            Ok(Some(Value::from(text.to_owned())))
        }
        // figment keeps it as text (or a u64), and says it is out of range.
        Err(_) if is_float_beyond_f64(text) || (is_integer(text) && !fits_i64(text)) => Ok(None),
        Err(reason) if matches!(default, Value::Array(..)) => Err(format!(
            "{reason} (a list is written as in TOML, each item in quotes: [\"a\", \"b\"])"
        )),
        Err(reason) => Err(reason),
    }
}

/// The TOML value `text` is after `key = `.
///
/// # Errors
/// Why TOML refuses it: its parser's reason and where it stopped.
fn toml_value(text: &str) -> Result<toml::Value, String> {
    let refused = |detail: String| format!("{text:?} is not a value casty.toml reads: {detail}");
    let mut table = match format!("v = {text}").parse::<toml::Table>() {
        Ok(table) => table,
        Err(e) => {
            let reason: Vec<&str> = e.message().lines().filter(|l| !l.is_empty()).collect();
            let reason = if reason.is_empty() {
                "no value".to_owned()
            } else {
                reason.join(", ")
            };
            let rest = e
                .span()
                .and_then(|span| text.get(span.start.saturating_sub(4)..))
                .unwrap_or("");
            let at = if rest.is_empty() {
                "at its end".to_owned()
            } else {
                format!("at {rest:?}")
            };
            let digits = text.trim_start_matches(['+', '-']);
            let zeros =
                digits.starts_with('0') && digits[1..].starts_with(|c: char| c.is_ascii_digit());
            return Err(refused(if zeros {
                format!("a TOML number has no leading zeros ({reason} {at})")
            } else {
                format!("{reason} {at}")
            }));
        }
    };
    match (table.remove("v"), table.is_empty()) {
        (Some(value), true) => Ok(value),
        _ => Err(refused(
            "more than one value (a line break and another key)".to_owned(),
        )),
    }
}

/// Unquoted text for a text key: all of `text` but the whitespace around
/// it, a `#` included (`team #1`): unquoted text is not TOML, and cutting
/// it at a `#` would change a cluster name or host without a word.
fn unquoted(text: &str) -> &str {
    text.trim()
}

/// Values from one named source: figment's `Serialized` provider under a
/// name of ours, so an error about a value says `(from command-line flag
/// --seed)` or `(from the built-in default)` rather than the value's Rust
/// type and a line of this file.
struct Named<T> {
    name: String,
    value: Serialized<T>,
}

/// A value set by a command-line flag (`--port`) for `key`.
fn flag<T: Serialize>(flag: &str, key: &str, value: T) -> Named<T> {
    Named {
        name: format!("command-line flag {flag}"),
        value: Serialized::default(key, value),
    }
}

/// The built-in defaults (every key).
fn defaults() -> Named<Config> {
    Named {
        name: "the built-in default".to_owned(),
        value: Serialized::defaults(Config::default()),
    }
}

impl<T: Serialize> figment::Provider for Named<T> {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(self.name.clone())
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        self.value.data()
    }
}

/// One line: the key, the problem and where the value came from.
fn describe(e: &figment::Error) -> String {
    let mut out = Vec::new();
    for err in e.clone() {
        let key = if err.path.is_empty() {
            String::from("(top level)")
        } else {
            err.path.join(".")
        };
        let source = match (
            &err.metadata,
            &err.metadata.as_ref().and_then(|m| m.source.as_ref()),
        ) {
            (Some(m), Some(src)) => format!("{} {}", m.name, src),
            (Some(m), None) => source_name(&m.name, &key),
            (None, _) => "unknown source".into(),
        };
        out.push(format!("{key}: {} (from {source})", kind_text(&err.kind)));
    }
    out.join("; ")
}

/// An error's kind in words that read on one line: an unknown key or
/// value lists the others once quoted (figment nests its list in a second
/// pair of backticks), values and types read as the user wrote them
/// ([`plain_actual`], [`plain_expected`]), an integer too large for 64 bits
/// (the environment passes it on as text) is out of range, and a number
/// in quotes is told to lose them; anything else in figment's words.
fn kind_text(kind: &figment::error::Kind) -> String {
    use figment::error::{Actual, Kind};
    match kind {
        Kind::UnknownField(field, []) => format!("unknown key `{field}`: this section has no keys"),
        Kind::UnknownField(field, expected) => format!(
            "unknown key `{field}`; the keys here are {}",
            expected.join(", ")
        ),
        // The environment passes a number beyond 64 bits on as text.
        Kind::InvalidType(Actual::Str(text), expected) if is_integer(text) && !fits_64(text) => {
            format!(
                "{} is out of range: expected {}",
                text.trim(),
                plain_expected(expected)
            )
        }
        // A float beyond f64 (`1e999`): TOML refuses it, so the
        // environment passes it on as text.
        Kind::InvalidType(Actual::Str(text), expected) if is_float_beyond_f64(text) => format!(
            "{} is out of range: expected {}",
            text.trim(),
            plain_expected(expected)
        ),
        // A number written in quotes (`port = "25520"`).
        Kind::InvalidType(Actual::Str(text), expected) if is_integer(text) => format!(
            "found the text \"{text}\", expected {} (write the number without quotes)",
            plain_expected(expected)
        ),
        // A float where a whole number goes (`port = 25521.0`, `1e6`):
        // said as written, not as the whole number it equals.
        Kind::InvalidType(found @ Actual::Float(_), expected) => format!(
            "found {} (a number with a fraction or exponent), expected {}",
            plain_actual(found),
            plain_expected(expected)
        ),
        Kind::InvalidType(found, expected) => format!(
            "found {}, expected {}",
            plain_actual(found),
            plain_expected(expected)
        ),
        Kind::InvalidValue(
            found @ (Actual::Signed(_) | Actual::Unsigned(_) | Actual::Float(_)),
            expected,
        ) => format!(
            "{} is out of range: expected {}",
            plain_actual(found),
            plain_expected(expected)
        ),
        Kind::InvalidValue(found, expected) => format!(
            "invalid value {}, expected {}",
            plain_actual(found),
            plain_expected(expected)
        ),
        // figment quotes each variant and the list again.
        Kind::UnknownVariant(found, expected) => format!(
            "unknown value `{found}`; the values here are {}",
            expected.join(", ")
        ),
        other => other.to_string(),
    }
}

/// A value as the user wrote it: `70000`, `the text "x"`, rather than
/// serde's `signed int \`70000\``.
fn plain_actual(found: &figment::error::Actual) -> String {
    use figment::error::Actual;
    match found {
        Actual::Signed(n) => n.to_string(),
        Actual::Unsigned(n) => n.to_string(),
        // `{:?}` keeps the fraction (25521.0, not 25521).
        Actual::Float(n) => format!("{n:?}"),
        Actual::Bool(b) => b.to_string(),
        Actual::Str(text) => format!("the text {text:?}"),
        other => other.to_string(),
    }
}

/// What a key takes, in words rather than serde's Rust type names
/// (`u16`, `struct ClusterSection`); anything else as serde wrote it.
fn plain_expected(expected: &str) -> String {
    let whole = |min: u64, max: u64| format!("a whole number from {min} to {max}");
    match expected {
        "u8" => whole(0, u8::MAX.into()),
        "u16" => whole(0, u16::MAX.into()),
        "u32" => whole(0, u32::MAX.into()),
        "u64" | "usize" => whole(0, u64::MAX),
        "a nonzero u32" => whole(1, u32::MAX.into()),
        "a nonzero u64" | "a nonzero usize" => whole(1, u64::MAX),
        "f32" | "f64" => "a number".to_owned(),
        e if e.starts_with("struct ") => "a table of keys".to_owned(),
        "a sequence" => "a list".to_owned(),
        e => e.to_owned(),
    }
}

/// Whether `text` is a whole number in decimal digits (a sign allowed).
fn is_integer(text: &str) -> bool {
    let digits = text.trim().trim_start_matches(['-', '+']);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `text` is a number written with digits that is too large for
/// an `f64` (`1e999`, `-1e400`; not `inf`).
fn is_float_beyond_f64(text: &str) -> bool {
    let text = text.trim();
    text.bytes().any(|b| b.is_ascii_digit()) && text.parse::<f64>().is_ok_and(|x| x.is_infinite())
}

/// Whether the whole number `text` fits an `i64`, TOML's integers.
fn fits_i64(text: &str) -> bool {
    text.trim().trim_start_matches('+').parse::<i64>().is_ok()
}

/// Whether the whole number `text` fits an `i64` or a `u64`.
fn fits_64(text: &str) -> bool {
    let text = text.trim().trim_start_matches('+');
    text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok()
}

/// A membership error with its keys as `casty.toml` spells them: the seed
/// keys are dotted already (`cluster.gossip.interval`), the others live in
/// `[cluster.membership]` (`probe_timeout_ms` becomes
/// `cluster.membership.probe_timeout_ms`), so [`with_source`] finds where
/// each value came from. Membership's messages quote every key they name
/// in backticks; a message without one is about the section.
fn membership_error(e: membership::ConfigError) -> ConfigError {
    let msg = e.to_string();
    if e.key().is_none() {
        return ConfigError(format!("cluster: {msg}"));
    }
    let mut out = String::with_capacity(msg.len() + 40);
    let mut quoted = false;
    for (i, part) in msg.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        if quoted && !part.contains('.') && !part.is_empty() {
            out.push_str("cluster.membership.");
        }
        out.push_str(part);
        quoted = !quoted;
    }
    // A bare key outside backticks (`MetadataTooLarge` names its key in
    // parentheses).
    if let Some(key) = e.key().filter(|k| !k.contains('.')) {
        let full = format!("cluster.membership.{key}");
        out = out.replacen(&format!("({key})"), &format!("({full})"), 1);
    }
    ConfigError(out)
}

/// Appends where each value came from to a [`Config::validate`] message,
/// which names its keys as dotted paths (`sharding.max_parked_asks must be
/// ...`); the message is kept as is when it names no key.
fn with_source(fig: &Figment, msg: String) -> String {
    with_sources(fig, msg, false)
}

/// [`with_source`], naming each key before its source even when there is
/// one source (`by_key`).
fn with_sources(fig: &Figment, msg: String, by_key: bool) -> String {
    let source_of = |key: &str| {
        fig.find_metadata(key).map(|m| match &m.source {
            Some(src) => format!("{} {src}", m.name),
            None => source_name(&m.name, key),
        })
    };
    // Every dotted word that is a key (a bound such as `1ms..=86400s` is
    // not), once, in the message's order.
    let mut sources: Vec<(&str, String)> = Vec::new();
    for word in msg.split([' ', ':', '=', '`', ',', ';', '(', ')']) {
        if word.contains('.') && !sources.iter().any(|(k, _)| *k == word) {
            if let Some(source) = source_of(word) {
                sources.push((word, source));
            }
        }
    }
    let Some((_, first)) = sources.first() else {
        return msg;
    };
    // A message about two keys (one above the other) names each one's
    // source when they differ: the value to change may be either.
    if !by_key && sources.iter().all(|(_, s)| s == first) {
        format!("{msg} (from {first})")
    } else {
        let each: Vec<String> = sources
            .iter()
            .map(|(k, s)| format!("{k} from {s}"))
            .collect();
        format!("{msg} ({})", each.join("; "))
    }
}

/// A source without a file, as an error names it: the environment's with
/// the variable that holds `key` (`cluster.port` is `CASTY_CLUSTER__PORT`,
/// spelled as it is in the environment; for a key the configuration does
/// not have, the variable under it: `CASTY_FOO__BAR` for `foo`); any
/// other (a flag, the defaults) by its own name.
fn source_name(name: &str, key: &str) -> String {
    if !name.contains("environment") {
        return name.to_owned();
    }
    let want = format!("CASTY_{}", key.to_uppercase().replace('.', "__"));
    let below = format!("{want}__");
    let set: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    let var = set
        .iter()
        .find(|k| k.to_uppercase() == want)
        .or_else(|| set.iter().find(|k| k.to_uppercase().starts_with(&below)))
        .cloned()
        .unwrap_or(want);
    format!("environment variable {var}")
}

/// The variables among `names` that figment would read as `CASTY_`
/// configuration (it trims a name's spaces and matches the prefix in any
/// case) but that name no key as this project spells keys: nothing after
/// the prefix, an empty part between `__` separators
/// (`CASTY_CLUSTER____PORT`), a space or a `.` anywhere in the name
/// (figment would read `.` as a separator and drop a key with an empty
/// part), or a name that is not UTF-8. Names are given lossily converted.
fn malformed_env_names(names: impl Iterator<Item = std::ffi::OsString>) -> Vec<String> {
    names
        .filter_map(|raw| {
            let lossy = raw.to_string_lossy().into_owned();
            let trimmed = lossy.trim();
            let prefix = trimmed.get(..6)?;
            if !prefix.eq_ignore_ascii_case("CASTY_") {
                return None;
            }
            let rest = &trimmed[6..];
            let bad = raw.to_str().is_none()
                || lossy.contains(char::is_whitespace)
                || rest.contains('.')
                || rest.is_empty()
                || rest.split("__").any(str::is_empty);
            bad.then_some(lossy)
        })
        .collect()
}

/// The error line for each key that two or more `CASTY_` variables among
/// `names` spell (figment matches names in any case and trims their
/// spaces: `CASTY_cluster__port` and `CASTY_CLUSTER__PORT` are one key,
/// and it would keep one value and drop the other unread), naming the
/// variables in sorted order; keys in sorted order.
fn env_names_of_one_key(names: impl Iterator<Item = std::ffi::OsString>) -> Vec<String> {
    let mut by_key: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for raw in names {
        let lossy = raw.to_string_lossy();
        let name = lossy.trim();
        let Some(prefix) = name.get(..6) else {
            continue;
        };
        if !prefix.eq_ignore_ascii_case("CASTY_") {
            continue;
        }
        let key = name[6..].to_lowercase().replace("__", ".");
        by_key.entry(key).or_default().push(name.to_owned());
    }
    by_key
        .into_iter()
        .filter(|(_, vars)| vars.len() > 1)
        .map(|(key, mut vars)| {
            vars.sort();
            let vars: Vec<String> = vars.iter().map(|v| format!("{v:?}")).collect();
            format!(
                "{key}: set by {} environment variables, {} (names are read in any case): keep one",
                vars.len(),
                vars.join(" and ")
            )
        })
        .collect()
}

/// Deepest nesting of `[` and `{` a `CASTY_` value may hold.
///
/// figment reads each `CASTY_` value with its own parser (`Env::data`, and
/// [`EnvLayer`] to find figment's reading), which recurses once per `[` or
/// `{` with no limit: about 1,500 levels overflowed the main thread's stack
/// and aborted the process (exit 134). The configuration's deepest value is
/// a list of text (`seed_nodes`, one level), and the toml crate refuses 80
/// levels in `casty.toml` ("recursion limit exceeded"), so 64 refuses
/// nothing a key can take and stays far from the stack's limit.
const MAX_ENV_NESTING: usize = 64;

/// The error line (the key, the depth, the variable) for each variable
/// among `vars` that figment would read as
/// `CASTY_` configuration (its name trimmed, the prefix in any case) whose
/// value nests `[` and `{` deeper than [`MAX_ENV_NESTING`], in the order
/// given. Every bracket counts, also inside quotes and unclosed ones: the
/// bound is far above any value a key takes, and counting them all cannot
/// miss one figment's parser recurses on.
fn deep_env_values(
    vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<String> {
    vars.filter_map(|(name, value)| {
        let name = name.to_string_lossy();
        let prefix = name.trim().get(..6)?;
        if !prefix.eq_ignore_ascii_case("CASTY_") {
            return None;
        }
        let depth = nesting(&value.to_string_lossy());
        (depth > MAX_ENV_NESTING).then(|| {
            let var = name.trim();
            let key = var[6..].to_lowercase().replace("__", ".");
            format!(
                "{key}: the value nests `[` or `{{` {depth} levels deep, above {MAX_ENV_NESTING} (no key takes more than a list) (from environment variable {})",
                var.escape_debug()
            )
        })
    })
    .collect()
}

/// The deepest nesting of `[` and `{` in `text`: each opens a level, each
/// `]` or `}` closes one (none below zero), whatever quotes surround them.
fn nesting(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The dotted key set on the line of TOML `text` holding byte `offset`
/// (`key = value` under the last `[table]` header above it), when that
/// line sets one.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(start..)?.lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let table = before[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(['[', ']']).trim().to_owned());
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_owned(),
    })
}

/// The dotted path of the first integer above `i64::MAX` in `value`.
fn key_above_toml(value: &figment::value::Value, path: String) -> Option<String> {
    use figment::value::Value;
    match value {
        Value::Num(_, n) => n
            .to_u128()
            .is_some_and(|n| n > i64::MAX as u128)
            .then_some(path),
        Value::Dict(_, dict) => dict
            .iter()
            .find_map(|(k, v)| key_above_toml(v, format!("{path}.{k}"))),
        Value::Array(_, items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| key_above_toml(v, format!("{path}[{i}]"))),
        _ => None,
    }
}

/// The path a config would be read from, for logs.
pub fn config_path(cli: &Cli) -> Option<PathBuf> {
    cli.config
        .clone()
        // Anything there (a directory too): reading it then says what is wrong.
        .or_else(|| Some(PathBuf::from("casty.toml")).filter(|p| Path::new(p).exists()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use figment::providers::Format;

    #[test]
    fn environment_names_with_an_empty_key_part_are_found() {
        use std::os::unix::ffi::OsStringExt;
        let mut names: Vec<std::ffi::OsString> = [
            "CASTY_CLUSTER__PORT",
            "casty_cluster__port",
            "CASTY_CLUSTER_PORT",
            "CASTY_",
            "casty_",
            "CASTY___CLUSTER__PORT",
            "CASTY_CLUSTER____PORT",
            "CASTY_CLUSTER__",
            "CASTYCLUSTER",
            "PATH",
            "CAST",
            "CASTY_Ä__X",
            "CASTY_CLUSTER..PORT",
            "CASTY_CLUSTER.PORT",
            "CASTY_CLUSTER__ ",
            " CASTY_CLUSTER____PORT",
            "CASTY_ ",
        ]
        .map(std::ffi::OsString::from)
        .into();
        names.push(std::ffi::OsString::from_vec(
            b"CASTY_CLUSTER__\xff".to_vec(),
        ));
        names.push(std::ffi::OsString::from_vec(b"OTHER_\xff".to_vec()));
        assert_eq!(
            malformed_env_names(names.into_iter()),
            [
                "CASTY_",
                "casty_",
                "CASTY___CLUSTER__PORT",
                "CASTY_CLUSTER____PORT",
                "CASTY_CLUSTER__",
                "CASTY_CLUSTER..PORT",
                "CASTY_CLUSTER.PORT",
                "CASTY_CLUSTER__ ",
                " CASTY_CLUSTER____PORT",
                "CASTY_ ",
                "CASTY_CLUSTER__\u{fffd}",
            ]
        );
    }

    #[test]
    fn two_spellings_of_one_environment_key_are_found() {
        let names = [
            "CASTY_CLUSTER__PORT",
            "CASTY_cluster__port",
            "OTHER",
            "CASTY_SYSTEM__NAME",
            " casty_system__name ",
            "CASTY_CLUSTER__HOST",
        ]
        .map(std::ffi::OsString::from);
        assert_eq!(
            env_names_of_one_key(names.into_iter()),
            [
                "cluster.port: set by 2 environment variables, \"CASTY_CLUSTER__PORT\" and \"CASTY_cluster__port\" (names are read in any case): keep one",
                "system.name: set by 2 environment variables, \"CASTY_SYSTEM__NAME\" and \"casty_system__name\" (names are read in any case): keep one",
            ]
        );
    }

    #[test]
    fn an_environment_value_nested_too_deep_is_found_before_figment_parses_it() {
        assert_eq!(nesting("['a:1', \"b:2\"]"), 1);
        assert_eq!(nesting("[[1], [2, [3]]]"), 3);
        assert_eq!(nesting("]]]["), 1);
        assert_eq!(nesting(&"{a=".repeat(10)), 10);
        // Inside quotes too, and unclosed.
        assert_eq!(nesting(&format!("\"{}\"", "[".repeat(65))), 65);
        let var = |name: &str, value: String| (name.into(), value.into());
        let vars = vec![
            var("CASTY_CLUSTER__SEED_NODES", "['a:1']".to_owned()),
            var("CASTY_SYSTEM__NAME", "[".repeat(MAX_ENV_NESTING)),
            var(" casty_cluster__port", "[".repeat(3000)),
            var("OTHER", "[".repeat(3000)),
            var(
                "CASTY_A__B",
                format!("{}{}", "{a=".repeat(65), "}".repeat(65)),
            ),
        ];
        assert_eq!(
            deep_env_values(vars.into_iter()),
            [
                "cluster.port: the value nests `[` or `{` 3000 levels deep, above 64 (no key takes more than a list) (from environment variable casty_cluster__port)",
                "a.b: the value nests `[` or `{` 65 levels deep, above 64 (no key takes more than a list) (from environment variable CASTY_A__B)",
            ]
        );
    }

    /// The one-line error for `toml` over the defaults, as `load` gives it.
    fn error_for(toml: &str) -> String {
        let fig = Figment::from(defaults()).merge(Toml::string(toml));
        match fig.extract::<Config>() {
            Err(e) => describe(&e),
            Ok(config) => match config.validate() {
                Err(ConfigError(msg)) => with_source(&fig, msg),
                Ok(()) => panic!("{toml:?} was accepted"),
            },
        }
    }

    #[test]
    fn an_unknown_key_lists_the_keys_of_its_section_once_quoted() {
        let line = error_for("[cluster]\nbogus = 1\n");
        assert!(
            line.starts_with("cluster.bogus: unknown key `bogus`; the keys here are host, port,"),
            "{line}"
        );
        assert_eq!(line.matches('`').count(), 2, "{line}");
    }

    #[test]
    fn values_and_types_read_in_words() {
        use figment::error::{Actual, Kind};
        let cases = [
            // A number too large for 64 bits comes from the environment as text.
            (
                Kind::InvalidType(
                    Actual::Str("99999999999999999999999".into()),
                    "a nonzero u32".into(),
                ),
                "99999999999999999999999 is out of range: expected a whole number from 1 to 4294967295",
            ),
            // In range but quoted: not "out of range".
            (
                Kind::InvalidType(Actual::Str("25520".into()), "u16".into()),
                "found the text \"25520\", expected a whole number from 0 to 65535 (write the number without quotes)",
            ),
            (
                Kind::InvalidType(Actual::Str("abc".into()), "a nonzero u32".into()),
                "found the text \"abc\", expected a whole number from 1 to 4294967295",
            ),
            (
                Kind::InvalidValue(Actual::Signed(70000), "u16".into()),
                "70000 is out of range: expected a whole number from 0 to 65535",
            ),
            // A float equal to a whole number: not said as one.
            (
                Kind::InvalidType(Actual::Float(25521.0), "u16".into()),
                "found 25521.0 (a number with a fraction or exponent), expected a whole number from 0 to 65535",
            ),
            (
                Kind::InvalidValue(Actual::Float(-1.0), "a number from 0".into()),
                "-1.0 is out of range: expected a number from 0",
            ),
            (
                Kind::InvalidType(Actual::Signed(5), "struct ClusterSection".into()),
                "found 5, expected a table of keys",
            ),
            (
                Kind::UnknownVariant("dropnew".into(), &["backpressure", "drop_new"]),
                "unknown value `dropnew`; the values here are backpressure, drop_new",
            ),
        ];
        for (kind, want) in cases {
            assert_eq!(kind_text(&kind), want);
        }
        assert!(is_integer("-12") && is_integer(" 7 ") && !is_integer("-") && !is_integer("1e3"));
        assert!(fits_64("-9223372036854775808") && fits_64("18446744073709551615"));
        assert!(!fits_64("18446744073709551616"));
        assert_eq!(
            kind_text(&Kind::InvalidType(
                Actual::Str("1e999".into()),
                "f64".into()
            )),
            "1e999 is out of range: expected a number"
        );
        assert!(is_float_beyond_f64("-1e400") && !is_float_beyond_f64("inf"));
        assert!(!is_float_beyond_f64("1e308") && !is_float_beyond_f64("abc"));
    }

    #[test]
    fn an_environment_value_is_read_as_toml_reads_it_for_its_key() {
        use figment::value::Value;
        let num = Value::from(0.5);
        let text = Value::from("127.0.0.1".to_owned());
        let list = Value::from(Vec::<String>::new());
        let number = |raw: &str| env_value(Some(&num), raw);
        // Exponents, as `interval = 5e-1` in casty.toml.
        assert_eq!(number("5e-1"), Ok(Some(Value::from(0.5))));
        assert_eq!(number("1e1"), Ok(Some(Value::from(10.0))));
        assert_eq!(number(" 1e0 "), Ok(Some(Value::from(1.0))));
        assert_eq!(number("1e308"), Ok(Some(Value::from(1e308))));
        // TOML's integers, as integers.
        assert_eq!(number("1_000"), Ok(Some(Value::from(1000_i64))));
        assert_eq!(number("0x10"), Ok(Some(Value::from(16_i64))));
        assert_eq!(number("+25520"), Ok(Some(Value::from(25520_i64))));
        // Too large for TOML: figment's reading stays, and so does its
        // "out of range".
        for raw in ["1e999", "18446744073709551615", "99999999999999999999999"] {
            assert_eq!(number(raw), Ok(None), "{raw}");
        }
        // A word is text, so the error says what the key takes.
        assert_eq!(number("abc"), Ok(Some(Value::from("abc".to_owned()))));
        // Not TOML: refused, saying why.
        for raw in ["1e", "1 2", ".5", "5.", "1__0", "\"1"] {
            let e = number(raw).unwrap_err();
            assert!(e.contains("is not a value casty.toml reads"), "{raw}: {e}");
        }
        // Leading zeros, refused as the file refuses them (7 and 0.5 before).
        for raw in ["007", "+007", "00.5", " 007 "] {
            let e = number(raw).unwrap_err();
            assert!(e.contains("no leading zeros"), "{raw}: {e}");
        }
        assert_eq!(
            number("\"8\""),
            Ok(Some(Value::from("8".to_owned()))),
            "quoted: text, as in the file"
        );
        assert_eq!(number("'8'"), Ok(Some(Value::from("8".to_owned()))));
        // Spaces around and a trailing comment are not part of the value.
        assert_eq!(number("\t8 "), Ok(Some(Value::from(8_i64))));
        for raw in ["8 # c", "8#c", "8 # c # d"] {
            assert_eq!(number(raw), Ok(Some(Value::from(8_i64))), "{raw}");
        }
        // Lists are TOML's too.
        let seeds = |raw: &str| env_value(Some(&list), raw);
        assert_eq!(
            seeds(" ['a:1', \"b:2\"] # c"),
            Ok(Some(Value::from(vec!["a:1".to_owned(), "b:2".to_owned()])))
        );
        let e = seeds("[a:1]").unwrap_err();
        assert!(e.contains("each item in quotes"), "{e}");
        // A text key: TOML's strings, else the unquoted text, all of it,
        // also where it reads as something else.
        let read = |raw: &str| match env_value(Some(&text), raw) {
            Ok(Some(Value::String(_, s))) => Ok(s),
            other => Err(format!("{other:?}")),
        };
        for (raw, want) in [
            ("1e5", "1e5"),
            ("inf", "inf"),
            ("nan", "nan"),
            ("drop_new", "drop_new"),
            ("1.5", "1.5"),
            ("25520", "25520"),
            ("true", "true"),
            ("[::1]", "[::1]"),
            ("007", "007"),
            ("\"abc\"", "abc"),
            ("'abc'", "abc"),
            (" 'abc' ", "abc"),
            ("\" abc \"", " abc "),
            ("\"abc\" # c", "abc"),
            ("\"a#b\"", "a#b"),
            (" my-cluster # c", "my-cluster # c"),
            ("team #1", "team #1"),
            ("a#b", "a#b"),
            ("inf # c", "inf # c"),
            ("", ""),
            // A `#` first too: no comment in unquoted text.
            (" # c", "# c"),
            ("# only comment", "# only comment"),
            ("#", "#"),
        ] {
            assert_eq!(read(raw).as_deref(), Ok(want), "{raw:?}");
        }
        // Quoted, the text must be TOML's.
        for raw in ["\"abc", "\"x\" \"y\"", "'abc"] {
            assert!(env_value(Some(&text), raw).is_err(), "{raw}");
        }
        // One value only: a line break cannot set another key.
        assert!(number("1\nw = 2").is_err());
        assert_eq!(number("1\n# c"), Ok(Some(Value::from(1_i64))));
        // A key the configuration does not have: figment's reading.
        assert_eq!(env_value(None, "5e-1"), Ok(None));
        let data = figment::Provider::data(&defaults()).unwrap();
        let defaults = Value::from(data[&figment::Profile::Default].clone());
        assert!(matches!(
            defaults.find_ref("cluster.failure_detector.threshold"),
            Some(Value::Num(..))
        ));
        assert!(matches!(
            defaults.find_ref("defaults.mailbox.strategy"),
            Some(Value::String(..))
        ));
        assert!(matches!(
            defaults.find_ref("cluster.seed_nodes"),
            Some(Value::Array(..))
        ));
    }

    #[test]
    fn a_toml_error_names_the_key_of_its_line() {
        let text =
            "[system]\nname = \"q\"\n\n[defaults.sharding]\nnum_shards = 99999999999999999999\n";
        let at = text.find("999").unwrap();
        assert_eq!(
            key_at(text, at).as_deref(),
            Some("defaults.sharding.num_shards")
        );
        assert_eq!(key_at("port = 1e999\n", 7).as_deref(), Some("port"));
        // A header line sets no key.
        assert_eq!(key_at("[cluster\n", 3), None);
    }

    #[test]
    fn a_limit_set_against_another_key_names_both_sources() {
        let line = error_for("[sharding]\nreplicate_linger_ms = 5000\n");
        assert!(
            line.ends_with(
                "(sharding.replicate_linger_ms from TOML source string; \
                 sharding.replicate_timeout_ms from the built-in default)"
            ),
            "{line}"
        );
        // Both from one source: named once.
        let line = error_for("[sharding]\nreplicate_linger_ms = 50\nreplicate_timeout_ms = 10\n");
        assert!(line.ends_with("= 10 (from TOML source string)"), "{line}");
    }

    #[test]
    fn a_seed_is_host_and_port_in_range() {
        assert!(check_host_port("127.0.0.1:25520").is_ok());
        assert!(check_host_port("[::1]:25520").is_ok());
        let e = check_host_port("127.0.0.1:99999").unwrap_err();
        assert!(e.contains("port 99999 is out of range"), "{e}");
        for bad in [
            "127.0.0.1",
            "127.0.0.1:x",
            "::1",
            ":25520",
            "h:+25520",
            "h:",
        ] {
            let e = check_host_port(bad).unwrap_err();
            assert!(e.contains("is not host:port"), "{bad}: {e}");
        }
        assert!(check_host_port("h:0").unwrap_err().contains("port 0"));
    }

    #[test]
    fn an_unspecified_host_is_refused_as_the_address_to_dial() {
        for host in ["0", "0.0", "0x0", "::ffff:0.0.0.0"] {
            assert!(is_any_address(host), "{host}");
        }
        for host in [
            "10.0.0.1",
            "0.0.0.1",
            "localhost",
            "::1",
            "auto",
            "node-0",
            "00a",
        ] {
            assert!(!is_any_address(host), "{host}");
        }
        for host in ["0.0.0.0", "::", "[::]"] {
            let line = error_for(&format!("[cluster]\nhost = \"{host}\"\n"));
            assert!(
                line.starts_with(&format!(
                    "cluster.host = {host} is not an address peers can dial"
                )) && line.contains("--bind-host"),
                "{line}"
            );
        }
    }

    #[test]
    fn a_host_is_checked_as_the_address_the_transport_advertises() {
        for host in ["127.0.0.1", "auto", "::1", "[::1]", "node-0.example"] {
            assert_eq!(check_host(host, 0), Ok(()), "{host}");
        }
        // The longest DNS name with the longest port.
        assert_eq!(check_host(&"h".repeat(253), 0), Ok(()));
        let e = check_host(&"h".repeat(254), 0).unwrap_err();
        assert!(
            e.ends_with("260 bytes exceeds 259 (port 0 counted as five digits)"),
            "{e}"
        );
        assert_eq!(check_host(&"h".repeat(254), 1), Ok(()));
        let e = check_host("a\nb", 1).unwrap_err();
        assert!(e.contains(r#""a\nb:1""#), "escaped: {e}");
        for host in ["a b", "\u{2800}", "a@b", "a#b"] {
            assert!(check_host(host, 1).is_err(), "{host:?}");
        }
        let line = error_for("[cluster]\nhost = \"a b\"\n");
        assert!(
            line.starts_with("cluster.host: node address \"a b:25520\" holds ' '")
                && line.ends_with("(from TOML source string)"),
            "{line}"
        );
        let line = error_for("[node]\nbind_host = \"a@b\"\n");
        assert!(
            line.starts_with("node.bind_host: bind address \"a@b:25520\" holds '@'")
                && line.ends_with("(from TOML source string)"),
            "{line}"
        );
    }

    #[test]
    fn a_payload_limit_larger_than_a_frame_is_refused_across_layers() {
        // The README's range allows 256 MiB; the default frame is 8 MiB.
        let line = error_for("[tasks]\nmax_payload_bytes = 268435456\n");
        assert!(
            line.starts_with("tasks.max_payload_bytes: 268435456 bytes")
                && line.contains("transport.max_frame_bytes = 8388608")
                && line.contains("lower it to 8384256")
                && line.ends_with(
                    "(tasks.max_payload_bytes from TOML source string; \
                     tasks.max_task_id_bytes from the built-in default; \
                     transport.max_frame_bytes from the built-in default)"
                ),
            "{line}"
        );
        // Raising the frame is the other way.
        let fig = Figment::from(defaults()).merge(Toml::string(
            "[tasks]\nmax_payload_bytes = 268435456\n[transport]\nmax_frame_bytes = 268500000\n",
        ));
        fig.extract::<Config>().unwrap().validate().unwrap();
    }

    #[test]
    fn a_sync_larger_than_a_frame_is_refused_across_layers() {
        let line = error_for("[cluster.membership]\nmax_sync_bytes = 16777216\n");
        assert!(
            line.starts_with(
                "cluster.membership.max_sync_bytes (16777216 bytes) must be at most \
                 transport.max_frame_bytes (8388608 bytes)"
            ) && line.ends_with(
                "(cluster.membership.max_sync_bytes from TOML source string; \
                 transport.max_frame_bytes from the built-in default)"
            ),
            "{line}"
        );
        // Equal is enough.
        let fig = Figment::from(defaults()).merge(Toml::string(
            "[cluster.membership]\nmax_sync_bytes = 8388608\n",
        ));
        fig.extract::<Config>().unwrap().validate().unwrap();
    }

    #[test]
    fn metadata_too_small_for_the_workload_marker_is_refused() {
        let marker = crate::workload::WORKLOAD_MARKER.len();
        let line = error_for(&format!(
            "[cluster.membership]\nmax_metadata_bytes = {}\n",
            marker - 1
        ));
        assert!(
            line.starts_with(&format!(
                "cluster.membership.max_metadata_bytes = {} is below {marker}",
                marker - 1
            )) && line.ends_with("(from TOML source string)"),
            "{line}"
        );
        // Exactly the marker's length is enough.
        let fig = Figment::from(defaults()).merge(Toml::string(&format!(
            "[cluster.membership]\nmax_metadata_bytes = {marker}\n"
        )));
        fig.extract::<Config>().unwrap().validate().unwrap();
    }
}
