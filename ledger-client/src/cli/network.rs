//! `ledger network`: create a network for real use, show what it is, rotate a site's key and
//! revoke one. It works on a directory the network's operator keeps:
//!
//! ```text
//! DIR/anchor/anchor.key     the anchor's SECRET key (mode 0600): move it offline; only
//!                           rotate-key and revoke need it, never a node
//! DIR/anchor/anchor.pub     its public key
//! DIR/trust/                what every node and every verifier may have: network.id,
//!                           anchor.pub, certs/*.cert, revocations/*.rev
//! DIR/nodes/<site>/         one node per site: node.toml and network/ (the trust above,
//!                           the site's key in sites/, its tokens in tokens/)
//! ```
//!
//! `nodes/<site>/network` has the layout a node reads (`ledger-node --network-dir`), so a
//! node directory can be copied to the machine that runs it as it is. New certificates and
//! revocations are written to `trust/` and to every node directory under `nodes/`; a node
//! takes them when it restarts, and refuses to sign with a key that is revoked or has no
//! valid certificate.

use super::exit::CliError;
use super::{out, Output};
use ledger_core::{
    Certificate, CertificateDraft, Fingerprint, Millis, NetworkId, PublicKey, Revocation, Role,
    SecretKey, SiteId, Timestamp,
};
use serde_json::json;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const DAY: i64 = 86_400_000;

/// The trust of a network as a directory holds it (every record checked against the anchor).
#[derive(Debug)]
pub struct Trust {
    pub dir: PathBuf,
    pub network: NetworkId,
    pub anchor: PublicKey,
    /// With the file each came from.
    pub certificates: Vec<(PathBuf, Certificate)>,
    pub revocations: Vec<(PathBuf, Revocation)>,
}

fn usage(msg: impl Into<String>) -> CliError {
    CliError::Usage(msg.into())
}

fn unreadable(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn unwritable(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::Unwritable {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp(ms)
}

fn random_key() -> Result<SecretKey, CliError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| usage(format!("no randomness from the operating system: {e}")))?;
    Ok(SecretKey::from_seed(&seed))
}

fn random_token() -> Result<String, CliError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)
        .map_err(|e| usage(format!("no randomness from the operating system: {e}")))?;
    Ok(hex::encode(b))
}

fn mkdir(path: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(path).map_err(|e| unwritable(path, e))
}

/// Writes a file only the owner can read, refusing to replace one.
fn write_secret(path: &Path, contents: &str) -> Result<(), CliError> {
    write_whole(path, contents.as_bytes(), 0o600)
}

/// Writes a public file, refusing to replace one (records are never edited, only added).
fn write_new(path: &Path, contents: &[u8]) -> Result<(), CliError> {
    write_whole(path, contents, 0o644)
}

/// Where this process writes a file's bytes before they take its name: named by the
/// process, so two runs never write into one another's, and never read by a loader (they
/// list files by their own extension).
fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.partial", std::process::id()));
    path.with_file_name(name)
}

/// Writes `contents` (synced) to this process's `.partial` beside `path`, ready for a link
/// or a rename. One left by an interrupted run is never loaded and blocks nothing.
fn write_partial(path: &Path, contents: &[u8], mode: u32) -> Result<PathBuf, CliError> {
    let partial = partial_path(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&partial)
        .map_err(|e| unwritable(&partial, e))?;
    let written = f
        .write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(|e| unwritable(&partial, e));
    if written.is_err() {
        // A failed write (a full disk): leave nothing behind; its own error is the one to
        // report.
        let _ = std::fs::remove_file(&partial);
    }
    written.map(|()| partial)
}

/// Syncs the directory holding `path`, so a new name in it survives a crash.
fn sync_parent(path: &Path) -> Result<(), CliError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| unwritable(dir, e))
}

/// Writes a whole file or none, refusing to replace one: the bytes are written and synced
/// under a `.partial` name first and then linked to `path` (a link never replaces), so a
/// crash or a full disk leaves no half-written record that would stop every node loading
/// the directory.
fn write_whole(path: &Path, contents: &[u8], mode: u32) -> Result<(), CliError> {
    let partial = write_partial(path, contents, mode)?;
    let linked = std::fs::hard_link(&partial, path).map_err(|e| unwritable(path, e));
    // Whether or not the link was made, the `.partial` has served; one that cannot be
    // removed is never loaded, so its removal failing must not fail the write.
    let _ = std::fs::remove_file(&partial);
    linked?;
    sync_parent(path)
}

/// Replaces the secret at `path` (or writes its first) in one rename, mode 0600: the file
/// always holds one whole secret, old or new, whatever stops the write.
fn replace_secret(path: &Path, contents: &str) -> Result<(), CliError> {
    let partial = write_partial(path, contents.as_bytes(), 0o600)?;
    if let Err(e) = std::fs::rename(&partial, path) {
        let _ = std::fs::remove_file(&partial);
        return Err(unwritable(path, e));
    }
    sync_parent(path)
}

fn read_hex32(path: &Path) -> Result<[u8; 32], CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(path, e))?;
    let bytes = hex::decode(text.trim())
        .map_err(|_| usage(format!("{}: must hold 64 hex digits", path.display())))?;
    bytes
        .try_into()
        .map_err(|_| usage(format!("{}: must hold 64 hex digits", path.display())))
}

fn files_with(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, CliError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| unreadable(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    Ok(out)
}

/// The sites of `init --sites`.
#[derive(Debug, Clone)]
pub struct SiteList(pub Vec<(SiteId, Role)>);

/// Parses `site:role,site:role`.
pub fn parse_sites(text: &str) -> Result<SiteList, String> {
    let mut sites: Vec<(SiteId, Role)> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (site, role) = item
            .split_once(':')
            .ok_or_else(|| format!("{item:?} is not SITE:ROLE (e.g. clinic-a:clinic)"))?;
        let site = SiteId::parse(site).map_err(|e| e.to_string())?;
        let role = Role::parse(role).ok_or_else(|| {
            format!("{item:?}: the role must be one of clinic, depot, manufacturer, lab")
        })?;
        if sites.iter().any(|(s, _)| *s == site) {
            return Err(format!("site {site} is listed twice"));
        }
        sites.push((site, role));
    }
    if sites.is_empty() {
        return Err("give at least one SITE:ROLE".to_owned());
    }
    Ok(SiteList(sites))
}

fn anchor_key_path(dir: &Path) -> PathBuf {
    dir.join("anchor").join("anchor.key")
}

fn read_anchor_secret(dir: &Path, path: Option<&Path>) -> Result<SecretKey, CliError> {
    let path = path.map_or_else(|| anchor_key_path(dir), Path::to_owned);
    if !path.exists() {
        return Err(usage(format!(
            "{}: no anchor key here; this command needs the anchor's secret key: bring it from where it is kept offline and pass --anchor-key FILE",
            path.display()
        )));
    }
    Ok(SecretKey::from_seed(&read_hex32(&path)?))
}

/// Finds the trust directory: `DIR/trust` of an operator's directory, or a node's network
/// directory itself.
fn trust_dir(dir: &Path) -> Result<PathBuf, CliError> {
    for candidate in [dir.join("trust"), dir.to_owned()] {
        if candidate.join("anchor.pub").exists() {
            return Ok(candidate);
        }
    }
    Err(usage(format!(
        "{}: not a network directory (no trust/anchor.pub or anchor.pub); create one with `ledger network init`",
        dir.display()
    )))
}

/// Loads and checks a trust directory: every record must be signed by its anchor.
///
/// # Errors
/// [`CliError::Usage`] naming the file that is wrong.
pub fn load(dir: &Path) -> Result<Trust, CliError> {
    let dir = trust_dir(dir)?;
    let anchor = PublicKey(read_hex32(&dir.join("anchor.pub"))?);
    let id_path = dir.join("network.id");
    let id_text = std::fs::read_to_string(&id_path).map_err(|e| unreadable(&id_path, e))?;
    let network = NetworkId::parse(id_text.trim())
        .map_err(|e| usage(format!("{}: {e}", id_path.display())))?;
    let mut certificates = Vec::new();
    for path in files_with(&dir.join("certs"), "cert")? {
        let bytes = std::fs::read(&path).map_err(|e| unreadable(&path, e))?;
        let cert = Certificate::from_bytes(&bytes)
            .map_err(|e| usage(format!("{}: {e}", path.display())))?;
        if cert.network != network || !cert.signed_by(&anchor) {
            return Err(usage(format!(
                "{}: not a certificate of network {network} signed by its anchor",
                path.display()
            )));
        }
        certificates.push((path, cert));
    }
    let mut revocations = Vec::new();
    for path in files_with(&dir.join("revocations"), "rev")? {
        let bytes = std::fs::read(&path).map_err(|e| unreadable(&path, e))?;
        let rev = Revocation::from_bytes(&bytes)
            .map_err(|e| usage(format!("{}: {e}", path.display())))?;
        if rev.network != network || !rev.signed_by(&anchor) {
            return Err(usage(format!(
                "{}: not a revocation of network {network} signed by its anchor",
                path.display()
            )));
        }
        revocations.push((path, rev));
    }
    Ok(Trust {
        dir,
        network,
        anchor,
        certificates,
        revocations,
    })
}

/// Every directory a trust record has to reach: `trust/` and each node's network directory.
fn record_dirs(root: &Path) -> Result<Vec<PathBuf>, CliError> {
    let mut dirs = vec![root.join("trust")];
    let nodes = root.join("nodes");
    if nodes.exists() {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&nodes)
            .map_err(|e| unreadable(&nodes, e))?
            .filter_map(|e| e.ok().map(|e| e.path().join("network")))
            .filter(|p| p.join("anchor.pub").exists())
            .collect();
        found.sort();
        dirs.extend(found);
    }
    Ok(dirs)
}

/// The network id `init` uses without `--network`: the directory's name.
///
/// # Errors
/// [`CliError::Usage`] when the name is not a valid network id.
pub fn id_from_dir(dir: &Path) -> Result<NetworkId, CliError> {
    let name = std::path::absolute(dir)
        .ok()
        .and_then(|d| d.file_name().and_then(|n| n.to_str()).map(str::to_owned))
        .unwrap_or_default();
    NetworkId::parse(&name).map_err(|e| {
        usage(format!(
            "the directory's name {name:?} is not a network id ({e}); give one with --network ID"
        ))
    })
}

fn node_toml(site: &SiteId, port: u16, metrics_port: u16) -> String {
    format!(
        r#"# Node for site {site}. Paths are relative to the directory the node starts in:
#   cd nodes/{site} && ledger-node --config node.toml
# Copy this directory to the machine that runs the node; it holds the site's secret key.
data_dir = "ledger-data"
network_dir = "network"
sites = ["{site}"]
# Loopback only until TLS is set up (tls_cert_file, tls_key_file).
listen = "127.0.0.1:{port}"
metrics_listen = "127.0.0.1:{metrics_port}"

# To replicate with the other sites' nodes, add the NATS servers (see docs/deploy/):
# [nats]
# urls = ["nats://127.0.0.1:4222"]
"#
    )
}

fn cert_file_name(site: &SiteId, generation: usize) -> String {
    format!("{site}.{generation}.cert")
}

/// `ledger network init`.
///
/// # Errors
/// [`CliError::Usage`] when DIR is not empty; I/O errors as unwritable (nothing is left behind: the network is made in a staging directory and renamed into place).
pub fn init(
    dir: &Path,
    network: &NetworkId,
    sites: &[(SiteId, Role)],
    valid_days: u32,
    base_port: u16,
    output: Output,
) -> Result<ExitCode, CliError> {
    let occupied = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(unreadable(dir, e)),
    };
    if occupied {
        return Err(usage(format!(
            "{}: is not empty (it may already hold a network); choose a new or empty directory",
            dir.display()
        )));
    }
    let n_sites = u16::try_from(sites.len()).unwrap_or(u16::MAX);
    if base_port.checked_add(n_sites).is_none() || base_port.checked_add(1000 + n_sites).is_none() {
        return Err(usage(format!(
            "--base-port {base_port} leaves no room for {n_sites} node(s)"
        )));
    }
    // Everything is written into a staging directory beside DIR and renamed into place at
    // the end, so a failure half way leaves no half-made network behind.
    let absolute = std::path::absolute(dir).map_err(|e| unwritable(dir, e))?;
    let parent = absolute
        .parent()
        .ok_or_else(|| usage(format!("{}: has no parent directory", dir.display())))?;
    mkdir(parent)?;
    let staging = parent.join(format!(
        ".{}.init-{}",
        absolute
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("network"),
        std::process::id()
    ));
    let written = write_network(&staging, network, sites, valid_days, base_port).and_then(|made| {
        if absolute.exists() {
            std::fs::remove_dir(&absolute).map_err(|e| unwritable(dir, e))?;
        }
        std::fs::rename(&staging, &absolute).map_err(|e| unwritable(dir, e))?;
        Ok(made)
    });
    let made = match written {
        Ok(made) => made,
        Err(e) => {
            // Best effort: the staging directory is garbage either way.
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    report_init(dir, network, sites, &made, base_port, output)
}

/// What `write_network` made that the report shows.
struct Made {
    anchor: PublicKey,
    valid_from: Timestamp,
    valid_until: Timestamp,
    /// The sites' keys, in the order of the sites.
    keys: Vec<PublicKey>,
}

fn write_network(
    staging: &Path,
    network: &NetworkId,
    sites: &[(SiteId, Role)],
    valid_days: u32,
    base_port: u16,
) -> Result<Made, CliError> {
    let at = now();
    let until = at.plus(Millis(i64::from(valid_days) * DAY));
    let anchor = random_key()?;
    let anchor_dir = staging.join("anchor");
    mkdir(&anchor_dir)?;
    write_secret(
        &anchor_key_path(staging),
        &format!("{}\n", hex::encode(anchor.seed())),
    )?;
    write_new(
        &anchor_dir.join("anchor.pub"),
        format!("{}\n", anchor.public().to_hex()).as_bytes(),
    )?;
    let mut certs = Vec::new();
    let mut keys = Vec::new();
    for (site, role) in sites {
        let key = random_key()?;
        let cert = CertificateDraft {
            network: network.clone(),
            site: site.clone(),
            role: *role,
            key: key.public(),
            valid_from: at,
            valid_until: until,
        }
        .sign(&anchor);
        certs.push(cert);
        keys.push(key);
    }
    let mut trust_dirs = vec![staging.join("trust")];
    trust_dirs.extend(
        sites
            .iter()
            .map(|(s, _)| staging.join("nodes").join(s.as_str()).join("network")),
    );
    for d in &trust_dirs {
        for sub in ["certs", "revocations"] {
            mkdir(&d.join(sub))?;
        }
        write_new(&d.join("network.id"), format!("{network}\n").as_bytes())?;
        for cert in &certs {
            write_new(
                &d.join("certs").join(cert_file_name(&cert.site, 1)),
                cert.bytes(),
            )?;
        }
        // Written last: its presence marks a complete trust directory.
        write_new(
            &d.join("anchor.pub"),
            format!("{}\n", anchor.public().to_hex()).as_bytes(),
        )?;
    }
    for (i, ((site, _), key)) in sites.iter().zip(&keys).enumerate() {
        let node_dir = staging.join("nodes").join(site.as_str());
        let net_dir = node_dir.join("network");
        mkdir(&net_dir.join("sites"))?;
        mkdir(&net_dir.join("tokens"))?;
        write_secret(
            &net_dir.join("sites").join(format!("{site}.key")),
            &format!("{}\n", hex::encode(key.seed())),
        )?;
        for name in [site.as_str(), "auditor", "regulator", "admin"] {
            write_secret(
                &net_dir.join("tokens").join(format!("{name}.token")),
                &format!("{}\n", random_token()?),
            )?;
        }
        let (port, metrics_port) = ports(base_port, i);
        write_new(
            &node_dir.join("node.toml"),
            node_toml(site, port, metrics_port).as_bytes(),
        )?;
    }
    Ok(Made {
        anchor: anchor.public(),
        valid_from: at,
        valid_until: until,
        keys: keys.iter().map(SecretKey::public).collect(),
    })
}

/// The gRPC and metrics ports of the `i`th site's node (checked to fit before writing).
fn ports(base_port: u16, i: usize) -> (u16, u16) {
    let offset = u16::try_from(i).unwrap_or(0);
    (
        base_port.saturating_add(offset),
        base_port.saturating_add(1000).saturating_add(offset),
    )
}

fn report_init(
    dir: &Path,
    network: &NetworkId,
    sites: &[(SiteId, Role)],
    made: &Made,
    base_port: u16,
    output: Output,
) -> Result<ExitCode, CliError> {
    let (at, until) = (made.valid_from, made.valid_until);
    let nodes: Vec<_> = sites
        .iter()
        .zip(&made.keys)
        .enumerate()
        .map(|(i, ((site, role), key))| {
            json!({
                "site": site.as_str(),
                "role": role.as_str(),
                "key_fingerprint": key.fingerprint(),
                "node_dir": dir.join("nodes").join(site.as_str()).display().to_string(),
                "listen": format!("127.0.0.1:{}", ports(base_port, i).0),
            })
        })
        .collect();
    let fingerprint = made.anchor.fingerprint();
    match output {
        Output::Json => out::println(
            json!({
                "network": network.as_str(),
                "anchor_fingerprint": fingerprint,
                "anchor_key": anchor_key_path(dir).display().to_string(),
                "trust_dir": dir.join("trust").display().to_string(),
                "valid_from": at.to_string(),
                "valid_until": until.to_string(),
                "nodes": nodes,
            })
            .to_string(),
        ),
        Output::Text => {
            let mut text = format!(
                "created network {network} in {}\n\nanchor fingerprint: {fingerprint}\n  Give this to every auditor and regulator (by a channel other than the one bundles come by): `ledger verify-bundle FILE --anchor {fingerprint}`.\n\n",
                dir.display()
            );
            text.push_str(&format!(
                "WARNING: {} is the anchor's secret key. Whoever holds it can certify any key for any site. Move it to offline storage now and keep no copy on a node; `ledger network rotate-key` and `revoke` need it (--anchor-key FILE).\n\n",
                anchor_key_path(dir).display()
            ));
            text.push_str(&format!(
                "certificates valid from {at} to {until}\n\none node directory per site (copy each to the machine that runs it; it holds the site's secret key and tokens):\n"
            ));
            for n in &nodes {
                text.push_str(&format!(
                    "  {:<14} {:<13} {}  (listens on {})\n",
                    n["site"].as_str().unwrap_or(""),
                    n["role"].as_str().unwrap_or(""),
                    n["node_dir"].as_str().unwrap_or(""),
                    n["listen"].as_str().unwrap_or("")
                ));
            }
            text.push_str("\nstart one with: cd NODE_DIR && ledger-node --config node.toml\n");
            out::print(text);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ledger network info`.
///
/// # Errors
/// [`CliError::Usage`] when DIR is not a network directory or a record in it is bad.
pub fn info(dir: &Path, output: Output) -> Result<ExitCode, CliError> {
    let trust = load(dir)?;
    let at = now();
    let revoked_from = |c: &Certificate| {
        trust
            .revocations
            .iter()
            .filter(|(_, r)| r.site == c.site && r.key == c.key)
            .map(|(_, r)| r.effective_from)
            .min()
    };
    let state = |c: &Certificate| -> &'static str {
        match revoked_from(c) {
            Some(from) if from <= at => "revoked",
            _ if c.valid_at(at) => "valid",
            _ if at < c.valid_from => "not yet valid",
            _ => "expired",
        }
    };
    match output {
        Output::Json => {
            let certs: Vec<_> = trust
                .certificates
                .iter()
                .map(|(path, c)| {
                    json!({
                        "site": c.site.as_str(),
                        "role": c.role.as_str(),
                        "key_fingerprint": c.key.fingerprint(),
                        "valid_from": c.valid_from.to_string(),
                        "valid_until": c.valid_until.to_string(),
                        "revoked_from": revoked_from(c).map(|t| t.to_string()),
                        "state": state(c),
                        "file": path.display().to_string(),
                    })
                })
                .collect();
            let revs: Vec<_> = trust
                .revocations
                .iter()
                .map(|(path, r)| {
                    json!({
                        "site": r.site.as_str(),
                        "key_fingerprint": r.key.fingerprint(),
                        "effective_from": r.effective_from.to_string(),
                        "reason": r.reason,
                        "file": path.display().to_string(),
                    })
                })
                .collect();
            out::println(
                json!({
                    "network": trust.network.as_str(),
                    "anchor_fingerprint": trust.anchor.fingerprint(),
                    "anchor_key": trust.anchor.to_hex(),
                    "trust_dir": trust.dir.display().to_string(),
                    "certificates": certs,
                    "revocations": revs,
                })
                .to_string(),
            );
        }
        Output::Text => {
            let mut text = format!(
                "network:            {}\nanchor fingerprint: {}\nanchor public key:  {}\n(trust read from {}; every record checked against the anchor)\n\ncertificates:\n",
                trust.network,
                trust.anchor.fingerprint(),
                trust.anchor.to_hex(),
                trust.dir.display()
            );
            for (_, c) in &trust.certificates {
                text.push_str(&format!(
                    "  {:<14} {:<13} key {}  {} to {}  {}\n",
                    c.site.as_str(),
                    c.role.as_str(),
                    c.key.fingerprint(),
                    c.valid_from,
                    c.valid_until,
                    state(c)
                ));
            }
            if trust.revocations.is_empty() {
                text.push_str("\nrevocations: none\n");
            } else {
                text.push_str("\nrevocations:\n");
                for (_, r) in &trust.revocations {
                    text.push_str(&format!(
                        "  {:<14} key {}  from {}  ({})\n",
                        r.site.as_str(),
                        r.key.fingerprint(),
                        r.effective_from,
                        r.reason
                    ));
                }
            }
            out::print(text);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ledger network rotate-key SITE`: a new key and certificate for the site. Events signed
/// with the old key stay valid (a key is judged at each event's recorded time); retire the
/// old key with `revoke` once the site's node signs with the new one.
///
/// # Errors
/// [`CliError::Usage`] for an unknown site or a missing anchor key.
pub fn rotate_key(
    root: &Path,
    site: &SiteId,
    anchor_key: Option<&Path>,
    valid_days: u32,
    output: Output,
) -> Result<ExitCode, CliError> {
    let trust = load(root)?;
    if trust.dir != root.join("trust") {
        return Err(usage(format!(
            "{}: rotate-key works on the directory `ledger network init` made (with trust/ and nodes/), not on a node's network directory",
            root.display()
        )));
    }
    let anchor = read_anchor_secret(root, anchor_key)?;
    if anchor.public() != trust.anchor {
        return Err(usage("the anchor key given is not this network's anchor (its public key differs from trust/anchor.pub)"));
    }
    let existing: Vec<&Certificate> = trust
        .certificates
        .iter()
        .map(|(_, c)| c)
        .filter(|c| c.site == *site)
        .collect();
    let Some(role) = existing.iter().map(|c| c.role).next_back() else {
        return Err(usage(format!(
            "site {site} has no certificate in {}: a new site needs its own node directory (run `ledger network init` for it)",
            trust.dir.display()
        )));
    };
    let at = now();
    let until = at.plus(Millis(i64::from(valid_days) * DAY));
    let key = random_key()?;
    let cert = CertificateDraft {
        network: trust.network.clone(),
        site: site.clone(),
        role,
        key: key.public(),
        valid_from: at,
        valid_until: until,
    }
    .sign(&anchor);
    let generation = existing.len() + 1;
    let name = cert_file_name(site, generation);
    let dirs = record_dirs(root)?;
    for d in &dirs {
        write_new(&d.join("certs").join(&name), cert.bytes())?;
    }
    // The site's node, if its directory is here, gets the new key; the old one is kept
    // beside it under a name the node does not load.
    let key_path = root
        .join("nodes")
        .join(site.as_str())
        .join("network/sites")
        .join(format!("{site}.key"));
    let installed = key_path.exists();
    if installed {
        // The key file always holds one whole key, old or new: the old one is linked to its
        // retired name first, then the new one replaces it in one rename.
        let retired = key_path.with_extension(format!("key.{}.retired", generation - 1));
        std::fs::hard_link(&key_path, &retired).map_err(|e| unwritable(&retired, e))?;
        replace_secret(&key_path, &format!("{}\n", hex::encode(key.seed())))?;
    }
    let old_keys: Vec<String> = existing.iter().map(|c| c.key.fingerprint()).collect();
    match output {
        Output::Json => out::println(
            json!({
                "site": site.as_str(),
                "key_fingerprint": key.public().fingerprint(),
                "certificate": name,
                "valid_from": at.to_string(),
                "valid_until": until.to_string(),
                "written_to": dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>(),
                "key_installed": installed.then(|| key_path.display().to_string()),
                "old_keys": old_keys,
            })
            .to_string(),
        ),
        Output::Text => {
            let mut text = format!(
                "site {site} has a new key {} (certificate {name}, valid {at} to {until})\n",
                key.public().fingerprint()
            );
            text.push_str(&format!(
                "the certificate was written to {} director{}:\n",
                dirs.len(),
                if dirs.len() == 1 { "y" } else { "ies" }
            ));
            for d in &dirs {
                text.push_str(&format!("  {}\n", d.display()));
            }
            if installed {
                text.push_str(&format!("the new key is in {}\n", key_path.display()));
            }
            text.push_str(&format!(
                "\nnext:\n  1. copy the certificate to every node (and the key to {site}'s node), and restart them;\n  2. once {site}'s node signs with the new key, retire the old one:\n     ledger network revoke {site} --dir {} --key {} --from <TIME> --reason rotated\n",
                root.display(),
                old_keys.last().map_or("<OLD_FINGERPRINT>", String::as_str)
            ));
            out::print(text);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ledger network rotate-token NAME --dir DIR`: a fresh random token replaces
/// `DIR/tokens/NAME.token` (or is its first), written and synced under a `.partial` name
/// and renamed into place, so the file always holds one whole token, old or new. A node
/// that read the old one keeps accepting it until it reads its tokens again (SIGHUP) or
/// restarts; the new token is never printed.
///
/// # Errors
/// [`CliError::Usage`] when `DIR` holds no `tokens/` directory; an unwritable error when
/// the file cannot be written.
pub fn rotate_token(dir: &Path, name: &SiteId, output: Output) -> Result<ExitCode, CliError> {
    let tokens = dir.join("tokens");
    if !tokens.is_dir() {
        return Err(usage(format!(
            "{}: holds no tokens/ directory; --dir is a node's network directory (net/nodes/SITE/network for a network `ledger network init` made, ledger-data/network for a development node)",
            dir.display()
        )));
    }
    let path = tokens.join(format!("{name}.token"));
    let replaced = path.exists();
    replace_secret(&path, &format!("{}\n", random_token()?))?;
    match output {
        Output::Json => out::println(
            json!({
                "name": name.as_str(),
                "token_file": path.display().to_string(),
                "replaced": replaced,
            })
            .to_string(),
        ),
        Output::Text => out::print(format!(
            "{} token for {name} is in {}\n\nnext:\n  1. make the node read its tokens again: kill -HUP <pid of its ledger-node> (or restart it);{}\n  2. give the file's content to {name}'s system\n",
            if replaced { "a new" } else { "the first" },
            path.display(),
            if replaced {
                " until then it accepts only the old token, and from then on only the new one"
            } else {
                ""
            },
        )),
    }
    Ok(ExitCode::SUCCESS)
}

/// `ledger network revoke SITE --from TIME`.
///
/// # Errors
/// [`CliError::Usage`] for an unknown site or key, or a missing anchor key.
pub fn revoke(
    root: &Path,
    site: &SiteId,
    key: Option<&Fingerprint>,
    from: Timestamp,
    reason: &str,
    anchor_key: Option<&Path>,
    output: Output,
) -> Result<ExitCode, CliError> {
    let trust = load(root)?;
    if trust.dir != root.join("trust") {
        return Err(usage(format!(
            "{}: revoke works on the directory `ledger network init` made (with trust/ and nodes/), not on a node's network directory",
            root.display()
        )));
    }
    if reason.trim().is_empty() || reason.len() > 1024 {
        return Err(usage("--reason must say why, in 1 to 1024 characters"));
    }
    let anchor = read_anchor_secret(root, anchor_key)?;
    if anchor.public() != trust.anchor {
        return Err(usage("the anchor key given is not this network's anchor (its public key differs from trust/anchor.pub)"));
    }
    let mut keys: Vec<PublicKey> = trust
        .certificates
        .iter()
        .map(|(_, c)| c)
        .filter(|c| c.site == *site)
        .map(|c| c.key)
        .collect();
    keys.dedup();
    if keys.is_empty() {
        return Err(usage(format!(
            "site {site} has no certificate in this network"
        )));
    }
    let target = match key {
        Some(fp) => *keys
            .iter()
            .find(|k| k.fingerprint_of() == *fp)
            .ok_or_else(|| {
                usage(format!(
                    "site {site} has no key with fingerprint {fp}; its keys: {}",
                    keys.iter()
                        .map(PublicKey::fingerprint)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?,
        None if keys.len() == 1 => keys[0],
        None => {
            return Err(usage(format!(
                "site {site} has {} keys; say which with --key FINGERPRINT: {}",
                keys.len(),
                keys.iter()
                    .map(PublicKey::fingerprint)
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    let rev = Revocation::sign(
        trust.network.clone(),
        site.clone(),
        target,
        from,
        reason.trim().to_owned(),
        &anchor,
    );
    let name = format!("{site}.{}.{}.rev", &target.to_hex()[..16], from.0);
    let dirs = record_dirs(root)?;
    for d in &dirs {
        write_new(&d.join("revocations").join(&name), rev.bytes())?;
    }
    match output {
        Output::Json => out::println(
            json!({
                "site": site.as_str(),
                "key_fingerprint": target.fingerprint(),
                "effective_from": from.to_string(),
                "reason": reason.trim(),
                "revocation": name,
                "written_to": dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>(),
            })
            .to_string(),
        ),
        Output::Text => {
            let mut text = format!(
                "revoked key {} of site {site} from {from} ({})\nthe revocation was written to:\n",
                target.fingerprint(),
                reason.trim()
            );
            for d in &dirs {
                text.push_str(&format!("  {}\n", d.display()));
            }
            text.push_str("\nnext: copy it to every node and restart them. Events the key signed before that time stay valid; a node refuses to sign with it from then on, and every verifier rejects what it signs after.\n");
            out::print(text);
        }
    }
    Ok(ExitCode::SUCCESS)
}
