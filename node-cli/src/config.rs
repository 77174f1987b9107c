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

/// A configuration error: one line naming the key and its source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Layers defaults, the config file, `CASTY_*` and the flags.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key and its source for an unknown key, a
    /// bad value, an unreadable or missing explicit file, or a value that
    /// breaks an invariant.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
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
            None => Some(PathBuf::from("casty.toml")).filter(|p| p.is_file()),
        };
        if let Some(p) = &path {
            // figment reports a TOML syntax error without the file name.
            let text = std::fs::read_to_string(p)
                .map_err(|e| ConfigError(format!("config file {}: {e}", p.display())))?;
            if let Err(e) = text.parse::<toml::Table>() {
                // toml's message: a location line, the source excerpt, then
                // the reason; keep the location and the reason, on one line.
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
                    "config file {}: {location}{}{reason}",
                    p.display(),
                    if reason.is_empty() { "" } else { ": " },
                )));
            }
        }
        let mut fig = Figment::from(defaults());
        if let Some(p) = &path {
            fig = fig.merge(Toml::file_exact(p));
        }
        fig = fig.merge(Env::prefixed("CASTY_").split("__"));
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
        Ok(config)
    }

    /// Checks every section's invariants.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.system.name.is_empty() {
            return Err(ConfigError("system.name must not be empty".into()));
        }
        if self.cluster.host.is_empty() {
            return Err(ConfigError("cluster.host must not be empty".into()));
        }
        for seed in &self.cluster.seed_nodes {
            check_host_port(seed).map_err(|e| ConfigError(format!("cluster.seed_nodes: {e}")))?;
        }
        self.membership().map_err(membership_error)?;
        self.transport.validate().map_err(ConfigError)?;
        self.region().validate().map_err(ConfigError)?;
        self.tasks
            .validate()
            .map_err(|e| ConfigError(format!("tasks: {e}")))?;
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

/// Checks a `host:port` seed address.
///
/// # Errors
/// A message when the port is missing, not a number, or 0.
pub fn check_host_port(addr: &str) -> Result<(), String> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => match port.parse::<u16>() {
            Ok(0) => Err(format!(
                "{addr:?}: port 0 is not a port anyone listens on (a seed is host:port, for example 127.0.0.1:25520)"
            )),
            Ok(_) => Ok(()),
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

/// An error's kind in words that read on one line: figment's own, except
/// an unknown key (figment nests its list of keys in a second pair of
/// backticks) and an integer too large for its key's type, which the
/// environment passes on as text ("found string \"99999999999999999999\"").
fn kind_text(kind: &figment::error::Kind) -> String {
    use figment::error::{Actual, Kind};
    match kind {
        Kind::UnknownField(field, []) => format!("unknown key `{field}`: this section has no keys"),
        Kind::UnknownField(field, expected) => format!(
            "unknown key `{field}`; the keys here are {}",
            expected.join(", ")
        ),
        Kind::InvalidType(Actual::Str(text), expected) if is_integer(text) => {
            format!("{} is out of range: expected {expected}", text.trim())
        }
        other => other.to_string(),
    }
}

/// Whether `text` is a whole number in decimal digits (a sign allowed).
fn is_integer(text: &str) -> bool {
    let digits = text.trim().trim_start_matches(['-', '+']);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A membership error with its key as `casty.toml` spells it: the seed
/// keys are dotted already (`cluster.gossip.interval`), the others live in
/// `[cluster.membership]` (`probe_timeout_ms` becomes
/// `cluster.membership.probe_timeout_ms`), so [`with_source`] finds where
/// the value came from.
fn membership_error(e: membership::ConfigError) -> ConfigError {
    let msg = e.to_string();
    match e.key() {
        Some(key) if !key.contains('.') => {
            let full = format!("cluster.membership.{key}");
            ConfigError(
                msg.replacen(&format!("`{key}`"), &format!("`{full}`"), 1)
                    .replacen(&format!("({key})"), &format!("({full})"), 1),
            )
        }
        Some(_) => ConfigError(msg),
        None => ConfigError(format!("cluster: {msg}")),
    }
}

/// Appends where the value came from to a [`Config::validate`] message,
/// which names the key as a dotted path (`sharding.max_parked_asks must be
/// ...`) or as a section then the key (`tasks: max_iterations ...`);
/// the message is kept as is when no key is found.
fn with_source(fig: &Figment, msg: String) -> String {
    let words: Vec<&str> = msg
        .split([' ', ':', '=', '`', ',', ';'])
        .filter(|w| !w.is_empty())
        .collect();
    let mut keys: Vec<String> = Vec::new();
    for dotted in words.iter().filter(|w| w.contains('.')) {
        if !keys.iter().any(|k| k == dotted) {
            keys.push((*dotted).to_owned());
        }
    }
    if keys.is_empty() {
        keys.extend(words.get(..2).map(|w| w.join(".")));
    }
    let source_of = |key: &str| {
        fig.find_metadata(key).map(|m| match &m.source {
            Some(src) => format!("{} {src}", m.name),
            None => source_name(&m.name, key),
        })
    };
    let Some(first) = keys.first().and_then(|k| source_of(k)) else {
        return msg;
    };
    // A message about two keys (one above the other) names each one's
    // source when they differ: the value to change may be either.
    let sources: Vec<(&String, String)> = keys
        .iter()
        .filter_map(|k| source_of(k).map(|s| (k, s)))
        .collect();
    if sources.iter().all(|(_, s)| *s == first) {
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
/// the variable that holds `key` (`cluster.port` is `CASTY_CLUSTER__PORT`);
/// any other (a flag) by its own name.
fn source_name(name: &str, key: &str) -> String {
    if name.contains("environment") {
        format!(
            "environment variable CASTY_{}",
            key.to_uppercase().replace('.', "__")
        )
    } else {
        name.to_owned()
    }
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
        .or_else(|| Some(PathBuf::from("casty.toml")).filter(|p| Path::new(p).is_file()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use figment::providers::Format;

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
    fn a_number_given_as_text_too_large_for_its_key_says_so() {
        use figment::error::{Actual, Kind};
        let kind = Kind::InvalidType(
            Actual::Str("99999999999999999999999".into()),
            "a nonzero u32".into(),
        );
        assert_eq!(
            kind_text(&kind),
            "99999999999999999999999 is out of range: expected a nonzero u32"
        );
        // Text that is no number keeps figment's words.
        let kind = Kind::InvalidType(Actual::Str("abc".into()), "a nonzero u32".into());
        assert_eq!(
            kind_text(&kind),
            "invalid type: found string \"abc\", expected a nonzero u32"
        );
        assert!(is_integer("-12") && is_integer(" 7 ") && !is_integer("-") && !is_integer("1e3"));
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
}
