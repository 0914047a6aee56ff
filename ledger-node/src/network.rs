//! The network as this node sees it: the anchor's public key, every site's certificate,
//! revocations, the keys of the sites this node signs for, and the bearer tokens it
//! accepts.
//!
//! Layout of a network directory:
//!
//! ```text
//! network.id            the network id
//! anchor.pub            the anchor public key, hex
//! anchor.key            (development networks only) the anchor secret, hex, mode 0600
//! certs/<site>.cert     anchor-signed certificates (CBOR)
//! revocations/*.rev     anchor-signed revocations (CBOR)
//! sites/<site>.key      secret keys of sites this node may sign for, hex, mode 0600
//! tokens/<name>.token   bearer tokens, mode 0600: <site>.token writes as that site;
//!                       auditor.token, regulator.token, admin.token read
//! ```
//!
//! Tokens alone can be read again while the node runs ([`Network::reload_tokens`], on
//! SIGHUP), so a leaked token is revoked by removing or replacing its file without a
//! restart. A reload takes the new set whole or not at all: with one file it cannot
//! accept, the tokens in use stay as they were. Keys, certificates and revocations are
//! read at start only (a node signs with them, and its feeds' standing follows them).
//!
//! A development network (created on a node's first start with no network directory) has
//! the sites the fixture journeys use, each with a fresh random key from the operating
//! system, never the fixtures' TEST-ONLY keys.

use ledger_core::{
    Certificate, CertificateDraft, KeyStanding, Millis, NetworkId, PublicKey, Revocation, Role,
    SecretKey, SiteId, Timestamp,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// The sites of a development network: the ones the fixture journeys use.
pub const DEV_SITES: &[(&str, Role)] = &[
    ("clinic-a", Role::Clinic),
    ("clinic-s", Role::Clinic),
    ("depot-1", Role::Depot),
    ("depot-2", Role::Depot),
    ("mfg-1", Role::Manufacturer),
    ("lab-1", Role::Lab),
];

/// Reader roles besides the sites.
pub const READER_TOKENS: &[&str] = &["auditor", "regulator", "admin"];

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("no key for site {site} in {dir}: this node cannot sign for it (remove it from `sites` or add sites/{site}.key)")]
    NoKey { site: SiteId, dir: PathBuf },
    #[error("site {site}: its key does not match any certificate in {dir}/certs")]
    KeyWithoutCertificate { site: SiteId, dir: PathBuf },
}

fn io(path: &Path, e: impl std::fmt::Display) -> NetworkError {
    NetworkError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> NetworkError {
    NetworkError::Invalid {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Who a bearer token speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    Site(SiteId),
    Auditor,
    Regulator,
    Admin,
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Site(s) => write!(f, "site {s}"),
            Principal::Auditor => f.write_str("auditor"),
            Principal::Regulator => f.write_str("regulator"),
            Principal::Admin => f.write_str("admin"),
        }
    }
}

/// A site this node signs for.
#[derive(Debug)]
pub struct LocalSite {
    pub id: SiteId,
    pub role: Role,
    pub key: SecretKey,
    /// When the key may sign, from its certificates and revocations.
    pub standing: KeyStanding,
}

/// Everything loaded from a network directory.
#[derive(Debug)]
pub struct Network {
    pub dir: PathBuf,
    pub id: NetworkId,
    pub anchor: PublicKey,
    pub certificates: Vec<Certificate>,
    pub revocations: Vec<Revocation>,
    pub local_sites: Vec<LocalSite>,
    /// SHA-256 of each token -> principal. Tokens are compared by hash so the table never
    /// holds a usable secret and lookups take the same time whatever the token. Replaced
    /// whole by a reload; a call looks it up once.
    tokens: RwLock<Tokens>,
}

type Tokens = HashMap<[u8; 32], Principal>;

impl Network {
    pub fn principal(&self, token: &str) -> Option<Principal> {
        self.tokens
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&token_hash(token))
            .cloned()
    }

    /// Reads `tokens/` again with the checks of [`load`] and, only if every file passes,
    /// replaces the tokens in use. Returns how many tokens are now accepted.
    ///
    /// # Errors
    /// The first file that fails a check (mode, directory mode, name, length, a token in
    /// two files); the tokens in use are unchanged then.
    pub fn reload_tokens(&self) -> Result<usize, NetworkError> {
        let tokens = load_tokens(&self.dir)?;
        let n = tokens.len();
        *self
            .tokens
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = tokens;
        Ok(n)
    }

    /// How many tokens are accepted now.
    pub fn n_tokens(&self) -> usize {
        self.tokens
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Every site's role, from the certificates the anchor signed.
    pub fn roles(&self) -> BTreeMap<SiteId, Role> {
        self.certificates
            .iter()
            .map(|c| (c.site.clone(), c.role))
            .collect()
    }
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(path: &Path, text: &str) -> Result<[u8; 32], NetworkError> {
    let id = ledger_core::EventId::from_hex(text.trim())
        .map_err(|_| invalid(path, "must hold 64 hex digits"))?;
    Ok(id.0)
}

fn random32(path: &Path) -> Result<[u8; 32], NetworkError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| {
        io(
            path,
            format!("no randomness from the operating system: {e}"),
        )
    })?;
    Ok(b)
}

/// Writes a file whole and syncs it; `secret` files only the owner can read.
fn write_synced(path: &Path, contents: &[u8], secret: bool) -> Result<(), NetworkError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| io(path, e))?;
    f.write_all(contents).map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))
}

fn write_secret(path: &Path, contents: &str) -> Result<(), NetworkError> {
    write_synced(path, contents.as_bytes(), true)
}

fn write_public(path: &Path, contents: &[u8]) -> Result<(), NetworkError> {
    write_synced(path, contents, false)
}

/// Creates `dir` (and its missing parents) with mode 0700, whatever the umask: under a
/// directory others may write, another user could put their own token or key in place.
fn private_dir_all(dir: &Path) -> Result<(), NetworkError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io(dir, e))
}

/// Makes the entries of a directory (files created or renamed in it) durable.
fn sync_dir(dir: &Path) -> Result<(), NetworkError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

/// What a development network creation produced (paths to log).
#[derive(Debug)]
pub struct Created {
    pub dir: PathBuf,
    pub anchor_fingerprint: String,
    pub token_dir: PathBuf,
    /// Scratch directories of earlier starts that stopped while creating, now removed.
    pub removed: Vec<PathBuf>,
}

/// The scratch directory a development network is built in, beside its final place, is
/// named `.<name>.partial-<pid>-<random>`. No loader reads it: the network appears under
/// its name whole, in one rename, or not at all.
fn scratch_prefix(name: &str) -> String {
    format!(".{name}.partial-")
}

const NOT_A_NETWORK: &str = "a directory that holds files but no anchor.pub is not a \
    complete network: move it away, or point `network_dir` at a real network";

/// Whether a first start could create a development network at `dir` (for `check-config`,
/// which must not create one): `Ok(true)` if there is none yet, `Ok(false)` if one is there.
///
/// # Errors
/// [`NetworkError`] when `dir` holds files but no `anchor.pub`, as [`create_dev`] would.
pub fn dev_network_pending(dir: &Path) -> Result<bool, NetworkError> {
    if dir.join("anchor.pub").exists() {
        return Ok(false);
    }
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io(dir, e)),
        Ok(mut entries) => match entries.next() {
            None => Ok(true),
            Some(_) => Err(io(dir, NOT_A_NETWORK)),
        },
    }
}

/// Creates a development network in `dir` unless one is there. Keys are random.
///
/// The files are written and synced in a scratch directory beside `dir`, which is then
/// renamed to `dir` (an empty `dir` is replaced): a start that stops half-way leaves only
/// scratch, removed by the next start, never a network missing a key or a token.
///
/// # Errors
/// [`NetworkError`] when a file cannot be written, or `dir` holds files but no
/// `anchor.pub` (not a network this function made).
pub fn create_dev(
    dir: &Path,
    id: &NetworkId,
    now: Timestamp,
) -> Result<Option<Created>, NetworkError> {
    if dir.join("anchor.pub").exists() {
        return Ok(None);
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    private_dir_all(&parent)?;
    let name = dir.file_name().map_or_else(
        || "network".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    let removed = remove_scratch(&parent, &name)?;
    let prefix = format!("{}{}-", scratch_prefix(&name), std::process::id());
    let scratch = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(&parent)
        .map_err(|e| io(&parent, e))?;
    let anchor = write_dev(scratch.path(), id, now)?;
    match std::fs::rename(scratch.path(), dir) {
        Ok(()) => {}
        Err(e) if dir.join("anchor.pub").exists() => {
            // Another process made it meanwhile; theirs stands (our scratch is dropped).
            tracing::debug!(dir = %dir.display(), error = %e, "network created by another process");
            return Ok(None);
        }
        Err(e) => {
            return Err(io(
                dir,
                format!("cannot put a new development network here ({e}); {NOT_A_NETWORK}"),
            ))
        }
    }
    // Renamed away: nothing left for the guard to remove.
    let _ = scratch.keep();
    sync_dir(&parent)?;
    Ok(Some(Created {
        dir: dir.to_owned(),
        anchor_fingerprint: anchor.public().fingerprint(),
        token_dir: dir.join("tokens"),
        removed,
    }))
}

/// Removes the scratch directories for `name` that earlier starts left when they stopped
/// while creating. Only a dead process's: one still running may be creating right now.
fn remove_scratch(parent: &Path, name: &str) -> Result<Vec<PathBuf>, NetworkError> {
    let prefix = scratch_prefix(name);
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(parent).map_err(|e| io(parent, e))? {
        let entry = entry.map_err(|e| io(parent, e))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        let alive = pid.parse::<u32>().is_ok_and(|pid| {
            pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
        });
        if !alive {
            let path = entry.path();
            std::fs::remove_dir_all(&path).map_err(|e| io(&path, e))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Writes every file of a development network into `dir` and syncs it; returns the anchor.
fn write_dev(dir: &Path, id: &NetworkId, now: Timestamp) -> Result<SecretKey, NetworkError> {
    const SUBDIRS: [&str; 4] = ["certs", "sites", "tokens", "revocations"];
    for sub in SUBDIRS {
        private_dir_all(&dir.join(sub))?;
    }
    let anchor = SecretKey::from_seed(&random32(dir)?);
    write_secret(
        &dir.join("anchor.key"),
        &format!("{}\n", hex(&anchor.seed())),
    )?;
    for (name, role) in DEV_SITES {
        let site = SiteId::parse(name).map_err(|e| invalid(dir, e.to_string()))?;
        let key = SecretKey::from_seed(&random32(dir)?);
        write_secret(
            &dir.join("sites").join(format!("{name}.key")),
            &format!("{}\n", hex(&key.seed())),
        )?;
        let cert = CertificateDraft {
            network: id.clone(),
            site,
            role: *role,
            key: key.public(),
            valid_from: now.minus(Millis(86_400_000)),
            valid_until: now.plus(Millis(5 * 365 * 86_400_000)),
        }
        .sign(&anchor);
        write_public(
            &dir.join("certs").join(format!("{name}.cert")),
            cert.bytes(),
        )?;
        write_secret(
            &dir.join("tokens").join(format!("{name}.token")),
            &format!("{}\n", hex(&random32(dir)?)),
        )?;
    }
    for name in READER_TOKENS {
        write_secret(
            &dir.join("tokens").join(format!("{name}.token")),
            &format!("{}\n", hex(&random32(dir)?)),
        )?;
    }
    write_public(&dir.join("network.id"), format!("{id}\n").as_bytes())?;
    write_public(
        &dir.join("anchor.pub"),
        format!("{}\n", anchor.public().to_hex()).as_bytes(),
    )?;
    for sub in SUBDIRS {
        sync_dir(&dir.join(sub))?;
    }
    sync_dir(dir)?;
    Ok(anchor)
}

fn read(path: &Path) -> Result<Vec<u8>, NetworkError> {
    std::fs::read(path).map_err(|e| io(path, e))
}

/// Reads a site key or a token, refusing one that other users could read or change: with
/// a site's key anyone on the machine could sign custody events as that site.
fn read_secret(path: &Path) -> Result<Vec<u8>, NetworkError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| io(path, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(invalid(
            path,
            format!(
                "is open to other users (mode {:04o}); a secret must be its owner's alone: chmod 600 {}",
                mode & 0o7777,
                path.display()
            ),
        ));
    }
    // A private file in a directory others may write can be replaced by theirs.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let dir_mode = std::fs::metadata(dir)
            .map_err(|e| io(dir, e))?
            .permissions()
            .mode();
        if dir_mode & 0o022 != 0 {
            return Err(invalid(
                path,
                format!(
                    "is in a directory other users may write (mode {:04o}), so anyone could put their own file in its place: chmod 700 {}",
                    dir_mode & 0o7777,
                    dir.display()
                ),
            ));
        }
    }
    read(path)
}

fn files_with(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, NetworkError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    Ok(out)
}

/// Loads a network directory; `sites` selects the sites to sign for (empty: all with a key).
///
/// # Errors
/// [`NetworkError`] naming the file and what is wrong with it.
pub fn load(dir: &Path, sites: &[SiteId]) -> Result<Network, NetworkError> {
    let anchor_path = dir.join("anchor.pub");
    let anchor = PublicKey(unhex32(
        &anchor_path,
        &String::from_utf8_lossy(&read(&anchor_path)?),
    )?);
    let id_path = dir.join("network.id");
    let id = NetworkId::parse(String::from_utf8_lossy(&read(&id_path)?).trim())
        .map_err(|e| invalid(&id_path, e.to_string()))?;
    let mut certificates = Vec::new();
    for path in files_with(&dir.join("certs"), "cert")? {
        let cert =
            Certificate::from_bytes(&read(&path)?).map_err(|e| invalid(&path, e.to_string()))?;
        if cert.network != id {
            return Err(invalid(
                &path,
                format!("is for network {}, not {id}", cert.network),
            ));
        }
        if !cert.signed_by(&anchor) {
            return Err(invalid(&path, "is not signed by this network's anchor"));
        }
        certificates.push(cert);
    }
    let mut revocations = Vec::new();
    for path in files_with(&dir.join("revocations"), "rev")? {
        let rev =
            Revocation::from_bytes(&read(&path)?).map_err(|e| invalid(&path, e.to_string()))?;
        if !rev.signed_by(&anchor) {
            return Err(invalid(&path, "is not signed by this network's anchor"));
        }
        if rev.network != id {
            return Err(invalid(
                &path,
                format!("is for network {}, not {id}", rev.network),
            ));
        }
        revocations.push(rev);
    }
    let wanted: Vec<SiteId> = if sites.is_empty() {
        files_with(&dir.join("sites"), "key")?
            .iter()
            .filter_map(|p| {
                p.file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| SiteId::parse(s).ok())
            })
            .collect()
    } else {
        sites.to_vec()
    };
    let mut local_sites = Vec::new();
    for site in wanted {
        let path = dir.join("sites").join(format!("{site}.key"));
        if !path.exists() {
            return Err(NetworkError::NoKey {
                site,
                dir: dir.to_owned(),
            });
        }
        let key = SecretKey::from_seed(&unhex32(
            &path,
            &String::from_utf8_lossy(&read_secret(&path)?),
        )?);
        let role = certificates
            .iter()
            .find(|c| c.site == site && c.key == key.public())
            .map(|c| c.role)
            .ok_or_else(|| NetworkError::KeyWithoutCertificate {
                site: site.clone(),
                dir: dir.to_owned(),
            })?;
        let standing = KeyStanding::of(&site, &key.public(), &certificates, &revocations);
        local_sites.push(LocalSite {
            id: site,
            role,
            key,
            standing,
        });
    }
    Ok(Network {
        dir: dir.to_owned(),
        id,
        anchor,
        certificates,
        revocations,
        local_sites,
        tokens: RwLock::new(load_tokens(dir)?),
    })
}

/// Every token file under `dir/tokens`, by hash, each checked as a secret.
fn load_tokens(dir: &Path) -> Result<Tokens, NetworkError> {
    let mut tokens = HashMap::new();
    for path in files_with(&dir.join("tokens"), "token")? {
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let principal = match name {
            "auditor" => Principal::Auditor,
            "regulator" => Principal::Regulator,
            "admin" => Principal::Admin,
            site => {
                Principal::Site(SiteId::parse(site).map_err(|e| invalid(&path, e.to_string()))?)
            }
        };
        let token = String::from_utf8_lossy(&read_secret(&path)?)
            .trim()
            .to_owned();
        if token.len() < 32 {
            return Err(invalid(&path, "a token must be at least 32 characters"));
        }
        // One token, two principals: which one a call acts as would depend on file order.
        if let Some(other) = tokens.insert(token_hash(&token), principal.clone()) {
            return Err(invalid(
                &path,
                format!(
                    "holds the same token as {other}'s token file; every token must be its own"
                ),
            ));
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn dev_network_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let id = NetworkId::parse("dev-net").unwrap();
        let created = create_dev(dir.path(), &id, Timestamp(1_800_000_000_000)).unwrap();
        assert!(created.is_some());
        assert!(
            create_dev(dir.path(), &id, Timestamp(0)).unwrap().is_none(),
            "second call must not overwrite"
        );
        let net = load(dir.path(), &[]).unwrap();
        assert_eq!(net.local_sites.len(), DEV_SITES.len());
        assert_eq!(net.certificates.len(), DEV_SITES.len());
        // Every secret (the anchor key, each site's key, each token) only its owner can read.
        let mut secrets = vec![dir.path().join("anchor.key")];
        for sub in ["sites", "tokens"] {
            for entry in std::fs::read_dir(dir.path().join(sub)).unwrap() {
                secrets.push(entry.unwrap().path());
            }
        }
        assert_eq!(secrets.len(), 1 + 2 * DEV_SITES.len() + READER_TOKENS.len());
        for path in &secrets {
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
        let token = std::fs::read_to_string(dir.path().join("tokens/mfg-1.token")).unwrap();
        assert_eq!(
            net.principal(token.trim()).as_ref(),
            Some(&Principal::Site(SiteId::parse("mfg-1").unwrap()))
        );
        assert_eq!(net.principal("not-a-token"), None);
    }

    #[test]
    fn a_reload_takes_the_new_tokens_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let id = NetworkId::parse("dev-net").unwrap();
        create_dev(dir.path(), &id, Timestamp(1_800_000_000_000)).unwrap();
        let net = load(dir.path(), &[]).unwrap();
        let n_before = net.n_tokens();
        let path = dir.path().join("tokens/mfg-1.token");
        let leaked = std::fs::read_to_string(&path).unwrap();
        let mfg = Some(Principal::Site(SiteId::parse("mfg-1").unwrap()));
        assert_eq!(net.principal(leaked.trim()), mfg);

        // Replaced: the leaked token stops working, the new one works.
        let fresh = "f".repeat(64);
        std::fs::write(&path, &fresh).unwrap();
        assert_eq!(net.reload_tokens().unwrap(), n_before);
        assert_eq!(net.principal(leaked.trim()), None);
        assert_eq!(net.principal(&fresh), mfg);

        // One file that fails a check: nothing changes, and the error names it.
        let bad = dir.path().join("tokens/auditor.token");
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::remove_file(&path).unwrap();
        let e = net.reload_tokens().unwrap_err().to_string();
        assert!(e.contains("auditor.token"), "{e}");
        assert_eq!(net.principal(&fresh), mfg);
        assert_eq!(net.n_tokens(), n_before);

        // Removed, with the directory right again: that principal has no token any more.
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(net.reload_tokens().unwrap(), n_before - 1);
        assert_eq!(net.principal(&fresh), None);
        let only = load(dir.path(), &[SiteId::parse("lab-1").unwrap()]).unwrap();
        assert_eq!(only.local_sites.len(), 1);
        let err = load(dir.path(), &[SiteId::parse("nowhere").unwrap()]).unwrap_err();
        assert!(err.to_string().contains("no key for site nowhere"), "{err}");
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_creation_that_stopped_half_way_leaves_scratch_that_the_next_start_removes() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("network");
        let id = NetworkId::parse("dev-net").unwrap();
        // What a start killed while writing leaves: scratch holding some of the files.
        // Left by a process that no longer runs (no pid is this large).
        let scratch = data.path().join(".network.partial-4294967295-a1b2c3");
        // Another process's scratch that is still being written stays.
        let parent_pid = std::os::unix::process::parent_id();
        let running = data
            .path()
            .join(format!(".network.partial-{parent_pid}-d4e5f6"));
        std::fs::create_dir(&running).unwrap();
        std::fs::create_dir_all(scratch.join("sites")).unwrap();
        std::fs::write(scratch.join("anchor.key"), "00\n").unwrap();
        let created = create_dev(&dir, &id, Timestamp(1_800_000_000_000))
            .unwrap()
            .expect("a network is created");
        assert_eq!(created.removed, vec![scratch.clone()]);
        assert_eq!(
            names_in(data.path()),
            vec![
                format!(".network.partial-{parent_pid}-d4e5f6"),
                "network".to_owned()
            ]
        );
        let net = load(&dir, &[]).unwrap();
        assert_eq!(net.local_sites.len(), DEV_SITES.len());
        assert_eq!(
            names_in(&dir.join("tokens")).len(),
            DEV_SITES.len() + READER_TOKENS.len()
        );
    }

    #[test]
    fn a_key_or_token_open_to_other_users_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let id = NetworkId::parse("dev-net").unwrap();
        create_dev(dir.path(), &id, Timestamp(1_800_000_000_000)).unwrap();
        for (file, mode) in [
            ("sites/clinic-a.key", 0o644),
            ("tokens/auditor.token", 0o640),
            ("tokens/clinic-a.token", 0o602),
        ] {
            let path = dir.path().join(file);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = load(dir.path(), &[]).unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "{}: is open to other users (mode {mode:04o}); a secret must be its owner's alone: chmod 600 {}",
                    path.display(),
                    path.display()
                )
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        // Owner-only modes narrower than 0600 are fine.
        let key = dir.path().join("sites/clinic-a.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
        load(dir.path(), &[]).unwrap();

        // The directories a secret sits in are created the owner's alone, whatever the
        // umask; one that others may write is refused (they could swap in their token).
        for sub in ["sites", "tokens", "certs", "revocations"] {
            let mode = std::fs::metadata(dir.path().join(sub))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{sub}");
        }
        let tokens = dir.path().join("tokens");
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = load(dir.path(), &[]).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "is in a directory other users may write (mode 0777), so anyone could put their own file in its place: chmod 700 {}",
                tokens.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn one_token_for_two_principals_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let id = NetworkId::parse("dev-net").unwrap();
        create_dev(dir.path(), &id, Timestamp(1_800_000_000_000)).unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::copy(tokens.join("admin.token"), tokens.join("lab-1.token.new")).unwrap();
        std::fs::rename(tokens.join("lab-1.token.new"), tokens.join("lab-1.token")).unwrap();
        let err = load(dir.path(), &[]).unwrap_err().to_string();
        assert!(
            err.contains("holds the same token as") && err.contains("every token must be its own"),
            "{err}"
        );
    }

    #[test]
    fn a_directory_with_files_but_no_anchor_is_refused_and_left_as_it_was() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("network");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("anchor.key"), "00\n").unwrap();
        let id = NetworkId::parse("dev-net").unwrap();
        let err = create_dev(&dir, &id, Timestamp(1_800_000_000_000))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "{}: cannot put a new development network here",
                dir.display()
            )),
            "{err}"
        );
        assert!(err.contains("holds files but no anchor.pub"), "{err}");
        assert_eq!(names_in(&dir), vec!["anchor.key".to_owned()]);
        assert_eq!(
            std::fs::read_to_string(dir.join("anchor.key")).unwrap(),
            "00\n"
        );
        // The scratch it built is gone too.
        assert_eq!(names_in(data.path()), vec!["network".to_owned()]);
    }
}
