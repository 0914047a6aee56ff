//! Operator work on a store: read the log without changing it, check the index against
//! the log, back the log up while the node runs, and restore a backup into an empty store.
//!
//! A backup is the log's valid prefix. The backup first fdatasyncs the log through its own
//! handle (fdatasync acts on the file, not on the handle), so every byte it copies is
//! durable on the node's disk: a crash of the node can never drop a record that a backup
//! holds and let the node sign that seq again differently.

use super::index::Index;
use super::log::{self, Loc, Scanner, Step};
use super::{BadRecord, OpenReport, Record, Store, StoreConfig, StoreError, INDEX_DIR};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The manifest written next to a backup's log.
pub const BACKUP_MANIFEST: &str = "BACKUP";

/// What a read of the log found.
#[derive(Debug, Default)]
pub struct LogScan {
    pub n_records: u64,
    /// End of the last valid record.
    pub valid_end: u64,
    pub file_len: u64,
    /// The first invalid record, if the log does not end cleanly: where and why.
    pub bad: Option<(u64, BadRecord)>,
    /// Whether that record is what an interrupted write leaves (see `log::torn_write`),
    /// rather than damage to written, possibly acknowledged, records.
    pub bad_is_torn_write: bool,
}

/// Reads the log in `dir` front to back, calling `visit` with each valid record and where it
/// lies; changes nothing (a torn tail is reported, not cut).
///
/// # Errors
/// [`StoreError::Io`], [`StoreError::NotALog`], [`StoreError::LogFormat`].
pub fn scan_log(dir: &Path, mut visit: impl FnMut(&Record, u64)) -> Result<LogScan, StoreError> {
    let (_file, path, len) = log::open_read_only(dir)?;
    let mut scanner = Scanner::new(&path, len)?;
    let mut scan = LogScan {
        file_len: len,
        ..LogScan::default()
    };
    loop {
        let offset = scanner.offset();
        match scanner.next_record()? {
            Step::End => break,
            Step::Bad(reason) => {
                scan.bad = Some((offset, reason));
                break;
            }
            Step::Record { record, .. } => {
                visit(&record, offset);
                scan.n_records += 1;
            }
        }
    }
    scan.valid_end = scanner.offset();
    if let Some((offset, reason)) = &scan.bad {
        scan.bad_is_torn_write = log::torn_write(&path, *offset, reason, len)?;
    }
    Ok(scan)
}

/// How the store's index compares with one rebuilt from its log.
#[derive(Debug, Default)]
pub struct IndexCheck {
    /// Keys compared (outbox marks, which the log does not determine, excepted).
    pub n_keys: u64,
    pub n_mismatches: u64,
    /// The first mismatches, described.
    pub mismatches: Vec<String>,
}

const MISMATCHES_SHOWN: usize = 20;

/// Rebuilds an index from the log in `scratch` (an empty directory) and compares the
/// store's index with it key by key. The node must be stopped: the index is locked while it
/// runs.
///
/// # Errors
/// [`StoreError::Sled`] (also when the node holds the index), and as [`scan_log`].
pub fn check_index(cfg: &StoreConfig, scratch: &Path) -> Result<IndexCheck, StoreError> {
    let index_dir = cfg.dir.join(INDEX_DIR);
    if !index_dir.exists() {
        return Ok(IndexCheck {
            n_keys: 0,
            n_mismatches: 1,
            mismatches: vec![format!("there is no index at {}", index_dir.display())],
        });
    }
    let live = Index::open(&index_dir, cfg.sled_cache_bytes)?;
    let (_file, path, len) = log::open_read_only(&cfg.dir)?;
    let reader = std::fs::File::open(&path).map_err(|source| StoreError::Io {
        op: "opening",
        path: path.clone(),
        source,
    })?;
    let fresh = Index::open(scratch, cfg.sled_cache_bytes)?;
    let scan = scan_log(&cfg.dir, |_, _| {})?;
    let id_at = |at: Loc| Ok(log::read_at(&reader, &path, at)?.event.id());
    super::reindex_all(&fresh, &path, scan.valid_end.min(len), &id_at)?;
    let mut check = IndexCheck::default();
    let note = |check: &mut IndexCheck, text: String| {
        check.n_mismatches += 1;
        if check.mismatches.len() < MISMATCHES_SHOWN {
            check.mismatches.push(text);
        }
    };
    let mut a = live
        .entries()
        .filter(|e| !matches!(e, Ok((k, _)) if Index::is_outbox_key(k)));
    let mut b = fresh.entries();
    let (mut x, mut y) = (a.next().transpose()?, b.next().transpose()?);
    loop {
        match (&x, &y) {
            (None, None) => break,
            (Some((k, _)), None) => {
                note(
                    &mut check,
                    format!(
                        "key {} is in the index but not implied by the log",
                        Index::describe(k)
                    ),
                );
                x = a.next().transpose()?;
            }
            (None, Some((k, _))) => {
                note(
                    &mut check,
                    format!(
                        "key {} is implied by the log but missing from the index",
                        Index::describe(k)
                    ),
                );
                y = b.next().transpose()?;
            }
            (Some((ka, va)), Some((kb, vb))) => {
                check.n_keys += 1;
                match ka.cmp(kb) {
                    std::cmp::Ordering::Equal => {
                        if va != vb {
                            note(
                                &mut check,
                                format!(
                                    "key {} holds another value than the log implies",
                                    Index::describe(ka)
                                ),
                            );
                        }
                        x = a.next().transpose()?;
                        y = b.next().transpose()?;
                    }
                    std::cmp::Ordering::Less => {
                        note(
                            &mut check,
                            format!(
                                "key {} is in the index but not implied by the log",
                                Index::describe(ka)
                            ),
                        );
                        x = a.next().transpose()?;
                    }
                    std::cmp::Ordering::Greater => {
                        note(
                            &mut check,
                            format!(
                                "key {} is implied by the log but missing from the index",
                                Index::describe(kb)
                            ),
                        );
                        y = b.next().transpose()?;
                    }
                }
            }
        }
    }
    Ok(check)
}

/// What a backup wrote.
#[derive(Debug)]
pub struct BackupReport {
    pub dir: PathBuf,
    pub n_records: u64,
    pub n_bytes: u64,
    pub sha256: String,
}

/// Copies the valid prefix of the log in `store_dir` to `out/events.log` (synced) and writes
/// a manifest. Safe while the node runs. `out` must not hold a backup already.
///
/// # Errors
/// [`StoreError::Io`] and as [`scan_log`]; [`StoreError::Io`] with kind `AlreadyExists`
/// when `out` holds a backup.
pub fn backup(store_dir: &Path, out: &Path) -> Result<BackupReport, StoreError> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { op, path, source }
    };
    let (file, path, _) = log::open_read_only(store_dir)?;
    // Everything up to here becomes durable on the node's disk before it is copied.
    file.sync_data().map_err(io("syncing", &path))?;
    let scan = scan_log(store_dir, |_, _| {})?;
    // A torn write at the end is a commit still under way (or one a crash cut short); a
    // damaged record is not, and a copy up to it would silently drop what follows.
    if let Some((offset, reason)) = scan.bad.clone() {
        if !scan.bad_is_torn_write {
            return Err(StoreError::Corrupt {
                path,
                offset,
                reason,
                detail: super::CorruptDetail::NotTorn {
                    after_bytes: scan.file_len - scan.valid_end,
                },
            });
        }
    }
    std::fs::create_dir_all(out).map_err(io("creating", out))?;
    let target = out.join(log::LOG_FILE);
    if target.exists() {
        return Err(StoreError::Io {
            op: "writing a backup to",
            path: target,
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a backup is already there; choose an empty directory",
            ),
        });
    }
    let tmp = out.join("events.log.partial");
    let mut src = std::fs::File::open(&path)
        .map_err(io("opening", &path))?
        .take(scan.valid_end);
    let mut dst = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n_bytes = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(io("reading", &path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(io("writing", &tmp))?;
        n_bytes += n as u64;
    }
    dst.sync_all().map_err(io("syncing", &tmp))?;
    drop(dst);
    std::fs::rename(&tmp, &target).map_err(io("renaming into place", &tmp))?;
    let sha256: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let manifest = format!(
        "# ledger-node backup: the event log's first {n_bytes} bytes ({} records).\n# Restore with `ledger-node restore {}` into an empty data directory.\nrecords = {}\nbytes = {n_bytes}\nsha256 = \"{sha256}\"\n",
        scan.n_records,
        out.display(),
        scan.n_records
    );
    let manifest_path = out.join(BACKUP_MANIFEST);
    std::fs::write(&manifest_path, manifest).map_err(io("writing", &manifest_path))?;
    log::sync_dir(out)?;
    Ok(BackupReport {
        dir: out.to_path_buf(),
        n_records: scan.n_records,
        n_bytes,
        sha256,
    })
}

/// Why a restore was refused before anything was written.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{dir} is not a backup: {reason}")]
    NotABackup { dir: PathBuf, reason: String },
    #[error("the store at {dir} already holds events; restore into an empty data directory (or move the store away first)")]
    StoreNotEmpty { dir: PathBuf },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Puts the backup in `backup_dir` into the empty store `cfg.dir` after checking it against
/// its manifest, marks the store for resync (`marker`: a file name in the store directory
/// the node reads at start), and opens it, which rebuilds the index.
///
/// # Errors
/// [`RestoreError`].
pub fn restore(
    backup_dir: &Path,
    cfg: &StoreConfig,
    marker: &str,
) -> Result<OpenReport, RestoreError> {
    let not_a_backup = |reason: String| RestoreError::NotABackup {
        dir: backup_dir.to_path_buf(),
        reason,
    };
    let manifest = std::fs::read_to_string(backup_dir.join(BACKUP_MANIFEST))
        .map_err(|e| not_a_backup(format!("{BACKUP_MANIFEST}: {e}")))?;
    let field = |name: &str| {
        manifest
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .trim_start()
                    .strip_prefix('=')
                    .map(|v| v.trim().trim_matches('"').to_owned())
            })
            .ok_or_else(|| not_a_backup(format!("{BACKUP_MANIFEST} has no {name}")))
    };
    let want_sha = field("sha256")?;
    let source = backup_dir.join(log::LOG_FILE);
    let bytes =
        std::fs::read(&source).map_err(|e| not_a_backup(format!("{}: {e}", source.display())))?;
    let sha: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if sha != want_sha {
        return Err(not_a_backup(format!("{} does not match its manifest (sha256 {sha}, manifest {want_sha}): it was altered or cut", source.display())));
    }
    let target = cfg.dir.join(log::LOG_FILE);
    if target.exists() && std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0) > log::HEADER_LEN
    {
        return Err(RestoreError::StoreNotEmpty {
            dir: cfg.dir.clone(),
        });
    }
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { op, path, source }
    };
    std::fs::create_dir_all(&cfg.dir).map_err(io("creating", &cfg.dir))?;
    // A leftover index of another log would not line up; open() rebuilds it anyway.
    let index_dir = cfg.dir.join(INDEX_DIR);
    if index_dir.exists() {
        std::fs::remove_dir_all(&index_dir).map_err(io("removing", &index_dir))?;
    }
    let tmp = cfg.dir.join("events.log.restoring");
    let mut f = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
    f.write_all(&bytes).map_err(io("writing", &tmp))?;
    f.sync_all().map_err(io("syncing", &tmp))?;
    drop(f);
    let marker_path = cfg.dir.join(marker);
    std::fs::write(
        &marker_path,
        "restored from a backup: learn every local feed from the network before signing\n",
    )
    .map_err(io("writing", &marker_path))?;
    std::fs::rename(&tmp, &target).map_err(io("renaming into place", &tmp))?;
    log::sync_dir(&cfg.dir)?;
    let (_store, report) = Store::open(cfg, |_| {})?;
    Ok(report)
}
