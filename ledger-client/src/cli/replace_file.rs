//! A file the user names with `--out` that a command replaces whole (`ledger export`).
//!
//! The target is checked before any work is done: it must be a regular file or not exist
//! yet, in a directory that exists. A directory, a device (`/dev/null`), a fifo or a socket
//! is refused with a usage error, never replaced by a regular file (as root a rename would
//! replace even a device node). The bytes go to a temporary file of this run only, created
//! exclusively under a random name beside the target, and synced; only then does it take
//! the target's name in one rename, so a reader sees the old file or the whole new one,
//! and two runs writing the same target each rename a complete file of their own. Any
//! failure removes the temporary file, and every error names the target, not the
//! temporary file.
//!
//! `ledger network` writes its files another way (`network.rs`): it must never replace a
//! file, so it links instead of renaming.

use super::exit::CliError;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// The bytes for `target`, in a temporary file beside it until [`Replacement::commit`].
/// Dropped without a commit, it removes the temporary file and leaves the target as it was.
#[derive(Debug)]
pub(super) struct Replacement {
    target: PathBuf,
    temp: NamedTempFile,
}

impl Replacement {
    /// Checks that `target` may be replaced and creates the temporary file for it.
    ///
    /// # Errors
    /// [`CliError::Usage`] when `target` is not a regular file or its directory does not
    /// exist; [`CliError::Unwritable`] when the temporary file cannot be created (no
    /// permission, a read-only file system).
    pub(super) fn begin(target: &Path) -> Result<Replacement, CliError> {
        let dir = check_target(target)?;
        // Not the mode a tempfile gets by default (0600): the umask decides, as it would for
        // a file the user created.
        let temp = tempfile::Builder::new()
            .prefix(&temp_prefix(target))
            .suffix(".partial")
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(|e| unwritable(target, &e))?;
        Ok(Replacement {
            target: target.to_owned(),
            temp,
        })
    }

    /// The temporary file, to write the bytes into.
    ///
    /// # Errors
    /// [`CliError::Unwritable`] when its handle cannot be duplicated.
    pub(super) fn file(&self) -> Result<std::fs::File, CliError> {
        self.temp
            .as_file()
            .try_clone()
            .map_err(|e| unwritable(&self.target, &e))
    }

    pub(super) fn target(&self) -> &Path {
        &self.target
    }

    /// Syncs the bytes written, then gives them the target's name, replacing a regular file
    /// there.
    ///
    /// # Errors
    /// [`CliError::Usage`] when the target became something else than a regular file since
    /// [`Replacement::begin`]; [`CliError::Unwritable`] when the sync or the rename fails.
    /// The temporary file is removed either way.
    pub(super) fn commit(self) -> Result<(), CliError> {
        let Replacement { target, temp } = self;
        temp.as_file()
            .sync_all()
            .map_err(|e| unwritable(&target, &e))?;
        // Checked again: the fetch may have taken minutes, and a rename would replace
        // whatever stands there now.
        check_target(&target)?;
        temp.persist(&target)
            .map_err(|e| unwritable(&target, &e.error))?;
        // The new name survives a crash only once the directory is synced too.
        std::fs::File::open(parent(&target))
            .and_then(|d| d.sync_all())
            .map_err(|e| unwritable(&target, &e))
    }
}

/// The directory `target` is in (`.` for a bare file name).
fn parent(target: &Path) -> &Path {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `.NAME.` so the temporary file sorts next to the target and says what it is for.
fn temp_prefix(target: &Path) -> std::ffi::OsString {
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(target.file_name().unwrap_or_default());
    prefix.push(".");
    prefix
}

fn usage(target: &Path, why: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!("{}: {why}", target.display()))
}

fn unwritable(target: &Path, e: &std::io::Error) -> CliError {
    // tempfile ends its errors with ` at path "<the temporary file>"` (and keeps no OS
    // error code to rebuild the message from); the user named the target and never heard
    // of the temporary file, so only the reason is kept.
    let text = e.to_string();
    let reason = text
        .split_once(" at path \"")
        .map_or(text.as_str(), |(reason, _)| reason)
        .to_owned();
    CliError::Unwritable {
        path: target.display().to_string(),
        reason,
    }
}

/// Whether `target` may be replaced by a regular file; its directory if so.
fn check_target(target: &Path) -> Result<&Path, CliError> {
    const GIVE_A_FILE: &str = "give the path of the file to write";
    // `Path` forgets a trailing slash (`out/` has the file name `out`), but the user meant
    // a directory.
    if target.as_os_str().as_bytes().ends_with(b"/") || target.file_name().is_none() {
        return Err(usage(
            target,
            format_args!("names a directory; {GIVE_A_FILE}"),
        ));
    }
    match std::fs::metadata(target) {
        Ok(meta) => {
            let kind = meta.file_type();
            let what = if kind.is_file() {
                None
            } else if kind.is_dir() {
                Some("a directory")
            } else if kind.is_char_device() {
                Some("a character device")
            } else if kind.is_block_device() {
                Some("a block device")
            } else if kind.is_fifo() {
                Some("a fifo")
            } else if kind.is_socket() {
                Some("a socket")
            } else {
                Some("not a regular file")
            };
            if let Some(what) = what {
                return Err(usage(
                    target,
                    format_args!(
                        "is {what}, which would be replaced by a regular file; {GIVE_A_FILE}"
                    ),
                ));
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) if e.kind() == ErrorKind::NotADirectory => {
            return Err(usage(
                target,
                "a part of the path before the file name is not a directory",
            ))
        }
        Err(e) => return Err(unwritable(target, &e)),
    }
    let dir = parent(target);
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(dir),
        Ok(_) => Err(usage(
            target,
            format_args!("{} is not a directory", dir.display()),
        )),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => Err(usage(
            target,
            format_args!(
                "the directory {} does not exist; create it first",
                dir.display()
            ),
        )),
        Err(e) => Err(unwritable(target, &e)),
    }
}

#[cfg(test)]
mod tests {
    //! The checks on the target, one per kind of path; `ledger-client/tests/cli_node.rs`
    //! runs `ledger export` into them.

    use super::*;

    /// Begins a replacement of `target` (`D` stands for `dir`) and drops it.
    #[track_caller]
    fn check(dir: &Path, target: &str, expect: &str) {
        let dir_text = dir.display().to_string();
        let target = PathBuf::from(target.replace('D', &dir_text));
        let got = match Replacement::begin(&target) {
            Ok(r) => {
                let n_files = || std::fs::read_dir(dir).expect("list").count();
                let n_before = n_files();
                drop(r);
                assert_eq!(
                    n_files(),
                    n_before - 1,
                    "the temporary file is gone on drop"
                );
                "ok".to_owned()
            }
            Err(e) => format!("{} {e}", super::super::exit::code_for_error(&e)),
        };
        assert_eq!(got.replace(&dir_text, "D"), expect);
    }

    #[test]
    fn only_a_regular_file_or_a_new_name_in_a_directory_is_replaced() {
        let d = tempfile::tempdir().expect("tempdir");
        let d = d.path();
        std::fs::write(d.join("old"), "old").expect("write");
        std::fs::create_dir(d.join("sub")).expect("mkdir");
        check(d, "D/new", "ok");
        check(d, "D/old", "ok");
        check(d, "D/sub", "2 D/sub: is a directory, which would be replaced by a regular file; give the path of the file to write");
        check(
            d,
            "D/sub/",
            "2 D/sub/: names a directory; give the path of the file to write",
        );
        check(
            d,
            "D/none/",
            "2 D/none/: names a directory; give the path of the file to write",
        );
        check(
            d,
            "D/sub/..",
            "2 D/sub/..: names a directory; give the path of the file to write",
        );
        check(
            d,
            "D/no/new",
            "2 D/no/new: the directory D/no does not exist; create it first",
        );
        check(
            d,
            "D/old/new",
            "2 D/old/new: a part of the path before the file name is not a directory",
        );
        // No file can be created in /proc, not even by root; the reason names no
        // temporary file.
        check(
            d,
            "/proc/new",
            "3 /proc/new: cannot write: No such file or directory (os error 2)",
        );
        check(d, "/dev/null", "2 /dev/null: is a character device, which would be replaced by a regular file; give the path of the file to write");
    }
}
