//! Node configuration: defaults, then a TOML file, then `LEDGER_*` environment variables,
//! then command-line flags, each overriding the one before. Parsed and validated once in
//! `main`; nothing else reads the environment.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// sled's cache capacity counts on-disk bytes and its memory runs several times that
/// (spacejam/sled#986), and grows with the store besides: 4 MiB keeps the node under
/// 200 MiB at rest after 1,000,000 events; the OS page cache holds what it does not.
pub const SLED_CACHE_MIB_DEFAULT: u64 = 4;

/// `LEDGER_*` variables that are not configuration keys: `LEDGER_CONFIG` names the file
/// (a flag's variable), and the `ledger` CLI's variables may be set in the same shell. Any
/// other unknown `LEDGER_*` variable is refused, so a misspelt key is not silently ignored.
const NOT_CONFIG_KEYS: &[&str] = &["config", "node", "token", "ca_file"];

/// Limits, each a named knob with a safe default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Appends waiting for the disk before new ones get RESOURCE_EXHAUSTED.
    pub append_queue_depth: usize,
    /// Requests in one AppendBatch call.
    pub append_batch_max: usize,
    /// Events written under one fdatasync.
    pub commit_group_max: usize,
    /// Calls per second per token (a token bucket with one second of burst).
    pub calls_per_second_per_token: u32,
    /// Largest gRPC request message.
    pub request_bytes_max: usize,
    /// Causal-clock entries (one per event, ~100 B) kept for chains not being appended to;
    /// beyond it the least recently used chains' clocks are dropped and rebuilt from the
    /// store when they are next appended to. Bounds the node's memory; 0 keeps only chains
    /// with appends in flight.
    pub chain_clock_entries: usize,
    /// How long a stopping node waits for open calls before it closes them. Appends finish
    /// in milliseconds; streams a client keeps open (a health watch, an export to a stalled
    /// reader) would otherwise hold the stop forever.
    pub shutdown_grace_ms: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            append_queue_depth: 4096,
            append_batch_max: 1000,
            commit_group_max: 4096,
            calls_per_second_per_token: 100_000,
            request_bytes_max: 4 * 1024 * 1024,
            chain_clock_entries: crate::ledger::CLOCK_BUDGET_DEFAULT,
            shutdown_grace_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the event log, index and (for a development network) keys live.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Prometheus metrics over HTTP; none to disable.
    pub metrics_listen: Option<SocketAddr>,
    /// The network directory (anchor.pub, certs/, sites/, tokens/). Default:
    /// `<data_dir>/network`, created as a development network on first start.
    pub network_dir: Option<PathBuf>,
    /// Network id for a development network created on first start.
    pub dev_network_id: String,
    /// Sites this node signs for; empty: every site whose key is in the network directory.
    pub sites: Vec<String>,
    /// Logs as JSON lines instead of text.
    pub log_json: bool,
    /// Serve gRPC over TLS with this certificate chain (PEM); needs `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// The index's cache; bounds the node's memory.
    pub sled_cache_mib: u64,
    /// How far a recorded time may go backwards before the verifier reports it.
    pub clock_tolerance_ms: i64,
    pub limits: Limits,
    /// When the node raises alerts.
    pub alerts: AlertsConfig,
    /// The web page (worklist, chain pages, alerts, KPIs).
    pub http: HttpConfig,
    /// Replication over NATS JetStream; absent: a standalone node.
    pub nats: Option<NatsConfig>,
}

/// The node's web page: read-only, behind the same tokens as the gRPC API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve the page; `false` opens no HTTP listener at all.
    pub enabled: bool,
    /// Its address (plain HTTP: keep it on loopback, or put a TLS proxy in front).
    pub listen: SocketAddr,
    /// Pages open at once with a live channel; more get 503 and reload periodically.
    pub live_streams_max: usize,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            live_streams_max: 256,
        }
    }
}

/// Alert thresholds (see `ledger_core::alert`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// `deadline_near` this long before a live unit's stability deadline.
    pub deadline_near_ms: i64,
    /// `deadline_imminent` this long before it (not more than `deadline_near_ms`).
    pub deadline_imminent_ms: i64,
    /// `excursion_undisposed` once a flagged excursion waited this long for a disposition.
    pub excursion_grace_ms: i64,
    /// `transit_overdue` after this long in transit, on lanes without their own limit.
    pub transit_default_ms: i64,
    /// Limits per lane: `[[alerts.lanes]] from = "clinic-a"`, `to = "mfg-1"`,
    /// `limit_ms = 86400000`.
    pub lanes: Vec<LaneLimit>,
    /// `site_silent` after this long without anything received from a site (replication).
    pub site_silence_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LaneLimit {
    pub from: String,
    pub to: String,
    pub limit_ms: i64,
}

impl Default for AlertsConfig {
    fn default() -> AlertsConfig {
        let p = ledger_core::AlertPolicy::default();
        AlertsConfig {
            deadline_near_ms: p.deadline_near.0,
            deadline_imminent_ms: p.deadline_imminent.0,
            excursion_grace_ms: p.excursion_grace.0,
            transit_default_ms: p.transit_default.0,
            lanes: Vec::new(),
            site_silence_ms: p.site_silence.0,
        }
    }
}

impl AlertsConfig {
    /// The policy core judges with; the config was validated.
    pub fn policy(&self) -> ledger_core::AlertPolicy {
        use ledger_core::{Millis, SiteId};
        ledger_core::AlertPolicy {
            deadline_near: Millis(self.deadline_near_ms),
            deadline_imminent: Millis(self.deadline_imminent_ms),
            excursion_grace: Millis(self.excursion_grace_ms),
            transit_default: Millis(self.transit_default_ms),
            transit_lanes: self
                .lanes
                .iter()
                .filter_map(|l| {
                    Some((
                        (SiteId::parse(&l.from).ok()?, SiteId::parse(&l.to).ok()?),
                        Millis(l.limit_ms),
                    ))
                })
                .collect(),
            site_silence: Millis(self.site_silence_ms),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        const YEAR_MS: i64 = 366 * 86_400_000;
        let span = |field: &'static str, v: i64| {
            if (1..=YEAR_MS).contains(&v) {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    field,
                    reason: format!("{v} is not 1 ms to one year (31,622,400,000 ms)"),
                })
            }
        };
        span("alerts.deadline_near_ms", self.deadline_near_ms)?;
        span("alerts.deadline_imminent_ms", self.deadline_imminent_ms)?;
        span("alerts.excursion_grace_ms", self.excursion_grace_ms)?;
        span("alerts.transit_default_ms", self.transit_default_ms)?;
        span("alerts.site_silence_ms", self.site_silence_ms)?;
        if self.deadline_imminent_ms > self.deadline_near_ms {
            return Err(ConfigError::Invalid {
                field: "alerts.deadline_imminent_ms",
                reason: format!(
                    "{} is more than alerts.deadline_near_ms ({}): the narrow window must lie inside the wide one",
                    self.deadline_imminent_ms, self.deadline_near_ms
                ),
            });
        }
        for l in &self.lanes {
            for site in [&l.from, &l.to] {
                ledger_core::SiteId::parse(site).map_err(|e| ConfigError::Invalid {
                    field: "alerts.lanes",
                    reason: format!("{site:?}: {e}"),
                })?;
            }
            span("alerts.lanes.limit_ms", l.limit_ms)?;
        }
        Ok(())
    }
}

/// How the node reaches NATS JetStream. Everything but `urls` has a default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URLs (the node reconnects to any of them), e.g. `nats://127.0.0.1:4222` or
    /// the local leaf node's.
    pub urls: Vec<String>,
    /// A file holding the server's auth token.
    pub token_file: Option<PathBuf>,
    /// A NATS credentials file (user JWT and NKey seed), for decentralised auth.
    pub creds_file: Option<PathBuf>,
    /// Require TLS; with `tls_ca_file`, trust only that CA.
    pub tls_required: bool,
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// The JetStream stream holding the network's events and checkpoints; created if
    /// missing. Default: `LEDGER_<network id>` (characters other than letters and digits
    /// become `_`).
    pub stream: Option<String>,
    /// Replicas of the stream when the node creates it (1 for a single server, 3 for a
    /// hub cluster).
    pub replicas: usize,
    /// The JetStream domain to use (a leaf node's local domain, or the hub's).
    pub domain: Option<String>,
    /// The durable consumer's name; default from the sites this node signs for.
    pub consumer: Option<String>,
    /// How often the node publishes a signed checkpoint of each feed that moved.
    pub checkpoint_interval_ms: u64,
}

impl Default for NatsConfig {
    fn default() -> NatsConfig {
        NatsConfig {
            urls: vec!["nats://127.0.0.1:4222".to_owned()],
            token_file: None,
            creds_file: None,
            tls_required: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            stream: None,
            replicas: 1,
            domain: None,
            consumer: None,
            checkpoint_interval_ms: 5_000,
        }
    }
}

/// Whether a name is usable as a JetStream stream or consumer name.
fn jetstream_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: PathBuf::from("./ledger-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            network_dir: None,
            dev_network_id: "dev-net".to_owned(),
            sites: Vec::new(),
            log_json: false,
            tls_cert_file: None,
            tls_key_file: None,
            sled_cache_mib: SLED_CACHE_MIB_DEFAULT,
            clock_tolerance_ms: 5 * 60_000,
            limits: Limits::default(),
            alerts: AlertsConfig::default(),
            http: HttpConfig::default(),
            nats: None,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(String),
    #[error("configuration: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl Config {
    /// Loads defaults < `file` < `LEDGER_*` env < `overrides` (flags given on the command
    /// line, as a partial TOML-shaped value).
    ///
    /// # Errors
    /// [`ConfigError`] naming the key that is wrong.
    pub fn load(file: Option<&Path>, overrides: impl Serialize) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(ConfigError::Invalid {
                    field: "config",
                    reason: format!("file {} does not exist", f.display()),
                });
            }
            fig = fig.merge(Toml::file(f));
        }
        fig = fig
            .merge(Env::prefixed("LEDGER_").split("__").ignore(NOT_CONFIG_KEYS))
            .merge(Serialized::defaults(overrides));
        let cfg: Config = fig
            .extract()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value; [`Config::load`] calls it, and so must anything that changes a
    /// loaded config.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.to_owned(),
            })
        };
        let l = &self.limits;
        if l.append_queue_depth == 0 || l.append_queue_depth > 1_000_000 {
            return invalid("limits.append_queue_depth", "must be 1 to 1,000,000");
        }
        if l.append_batch_max == 0 || l.append_batch_max > 10_000 {
            return invalid("limits.append_batch_max", "must be 1 to 10,000");
        }
        if l.commit_group_max == 0 || l.commit_group_max > 100_000 {
            return invalid("limits.commit_group_max", "must be 1 to 100,000");
        }
        if (l.calls_per_second_per_token as usize) < l.append_batch_max {
            // A batch is charged one call per event, and the bucket holds one second.
            return invalid(
                "limits.calls_per_second_per_token",
                &format!(
                    "must be at least limits.append_batch_max ({}): a full batch could never pass the rate limit",
                    l.append_batch_max
                ),
            );
        }
        if l.request_bytes_max < 64 * 1024 || l.request_bytes_max > 64 * 1024 * 1024 {
            return invalid("limits.request_bytes_max", "must be 64 KiB to 64 MiB");
        }
        if l.chain_clock_entries > 100_000_000 {
            return invalid("limits.chain_clock_entries", "must be 0 to 100,000,000");
        }
        if !(100..=600_000).contains(&l.shutdown_grace_ms) {
            // Under 100 ms an append in flight could be cut off before its answer is sent.
            return invalid(
                "limits.shutdown_grace_ms",
                "must be 100 to 600,000 (ten minutes)",
            );
        }
        self.alerts.validate()?;
        if self.http.live_streams_max == 0 || self.http.live_streams_max > 100_000 {
            return invalid("http.live_streams_max", "must be 1 to 100,000");
        }
        if self.sled_cache_mib == 0 || self.sled_cache_mib > 64 * 1024 {
            return invalid("sled_cache_mib", "must be 1 to 65536");
        }
        if !(0..=86_400_000).contains(&self.clock_tolerance_ms) {
            return invalid("clock_tolerance_ms", "must be 0 to 86,400,000 (one day)");
        }
        for s in &self.sites {
            ledger_core::SiteId::parse(s).map_err(|e| ConfigError::Invalid {
                field: "sites",
                reason: e.to_string(),
            })?;
        }
        ledger_core::NetworkId::parse(&self.dev_network_id).map_err(|e| ConfigError::Invalid {
            field: "dev_network_id",
            reason: e.to_string(),
        })?;
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return invalid(
                "tls_cert_file",
                "TLS needs both tls_cert_file and tls_key_file",
            );
        }
        if self.metrics_listen.is_some_and(|a| a.port() == 0) {
            return invalid(
                "metrics_listen",
                "port 0 would serve metrics on a port no scraper can learn: give a port, or \
                 turn metrics off (--no-metrics)",
            );
        }
        if self.http.enabled
            && self.http.listen.port() != 0
            && (self.http.listen == self.listen || Some(self.http.listen) == self.metrics_listen)
        {
            return invalid("http.listen", "must differ from listen and metrics_listen");
        }
        if Some(self.listen) == self.metrics_listen {
            return invalid("metrics_listen", "must differ from listen");
        }
        if let Some(n) = &self.nats {
            if n.urls.is_empty() {
                return invalid("nats.urls", "needs at least one server URL");
            }
            for u in &n.urls {
                let ok = ["nats://", "tls://", "ws://", "wss://"]
                    .iter()
                    .any(|scheme| u.starts_with(scheme) && u.len() > scheme.len());
                if !ok {
                    return Err(ConfigError::Invalid {
                        field: "nats.urls",
                        reason: format!(
                            "{u:?} is not a NATS URL (nats://host:port or tls://host:port)"
                        ),
                    });
                }
            }
            if n.token_file.is_some() && n.creds_file.is_some() {
                return invalid(
                    "nats.token_file",
                    "give either token_file or creds_file, not both",
                );
            }
            if n.tls_cert_file.is_some() != n.tls_key_file.is_some() {
                return invalid(
                    "nats.tls_cert_file",
                    "a client certificate needs both tls_cert_file and tls_key_file",
                );
            }
            if let Some(name) = &n.stream {
                if !jetstream_name_ok(name) {
                    return invalid(
                        "nats.stream",
                        "may hold only letters, digits, - and _ (at most 128)",
                    );
                }
            }
            if let Some(name) = &n.consumer {
                if !jetstream_name_ok(name) {
                    return invalid(
                        "nats.consumer",
                        "may hold only letters, digits, - and _ (at most 128)",
                    );
                }
            }
            if !(1..=5).contains(&n.replicas) {
                return invalid("nats.replicas", "must be 1 to 5");
            }
            if !(100..=3_600_000).contains(&n.checkpoint_interval_ms) {
                return invalid("nats.checkpoint_interval_ms", "must be 100 to 3,600,000");
            }
        }
        Ok(())
    }

    pub fn network_dir(&self) -> PathBuf {
        self.network_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("network"))
    }

    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }

    /// The store as the node and its maintenance commands open it.
    pub fn store_config(&self) -> crate::store::StoreConfig {
        crate::store::StoreConfig {
            dir: self.store_dir(),
            sled_cache_bytes: self.sled_cache_mib * 1024 * 1024,
            preallocate: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct NoOverrides {}

    #[test]
    fn defaults_validate_and_file_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("node.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:7000\"\n[limits]\nappend_batch_max = 10\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&f), NoOverrides {}).unwrap();
        assert_eq!(cfg.listen.port(), 7000);
        assert_eq!(cfg.limits.append_batch_max, 10);
        assert_eq!(
            cfg.limits.append_queue_depth,
            Limits::default().append_queue_depth
        );
    }

    #[test]
    fn errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("node.toml");
        std::fs::write(&f, "[limits]\nappend_batch_max = 0\n").unwrap();
        let e = Config::load(Some(&f), NoOverrides {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.append_batch_max"), "{e}");
        std::fs::write(
            &f,
            "[limits]\nappend_batch_max = 500\ncalls_per_second_per_token = 499\n",
        )
        .unwrap();
        let e = Config::load(Some(&f), NoOverrides {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "limits.calls_per_second_per_token: must be at least limits.append_batch_max (500)"
            ),
            "{e}"
        );
        std::fs::write(&f, "[limits]\nshutdown_grace_ms = 0\n").unwrap();
        let e = Config::load(Some(&f), NoOverrides {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("limits.shutdown_grace_ms: must be 100 to 600,000"),
            "{e}"
        );
        std::fs::write(&f, "listn = \"x\"\n").unwrap();
        let e = Config::load(Some(&f), NoOverrides {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("listn"), "{e}");
        let e = Config::load(Some(&dir.path().join("absent.toml")), NoOverrides {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    // figment::Jail's closure returns figment's own (large) error type.
    #[allow(clippy::result_large_err)]
    fn the_cli_variables_in_the_same_shell_are_not_configuration_but_a_misspelt_key_is_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LEDGER_CONFIG", "elsewhere.toml");
            jail.set_env("LEDGER_NODE", "http://127.0.0.1:50051");
            jail.set_env("LEDGER_TOKEN", "secret");
            jail.set_env("LEDGER_CA_FILE", "ca.pem");
            jail.set_env("LEDGER_LIMITS__APPEND_BATCH_MAX", "7");
            let cfg = Config::load(None, NoOverrides {}).map_err(|e| e.to_string())?;
            assert_eq!(cfg.limits.append_batch_max, 7);
            jail.set_env("LEDGER_DATA_DIRR", "/tmp/x");
            let e = Config::load(None, NoOverrides {}).unwrap_err().to_string();
            assert!(e.contains("unknown field: found `data_dirr`"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn metrics_listen_needs_its_own_known_port() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("node.toml");
        let load = |text: &str| {
            std::fs::write(&f, text).unwrap();
            Config::load(Some(&f), NoOverrides {}).map(|c| c.metrics_listen)
        };
        let e = load("listen = \"127.0.0.1:7000\"\nmetrics_listen = \"127.0.0.1:7000\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics_listen: must differ from listen"), "{e}");
        let e = load("listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("metrics_listen: port 0 would serve metrics"),
            "{e}"
        );
        let ok = load("listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(ok.map(|a| a.port()), Some(9464));
    }

    #[test]
    fn deployment_examples_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/deploy");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|x| x == "toml") {
                let cfg = Config::load(Some(&path), NoOverrides {})
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(cfg.nats.is_some(), "{} configures no NATS", path.display());
                n += 1;
            }
        }
        assert_eq!(n, 2);
    }
}
