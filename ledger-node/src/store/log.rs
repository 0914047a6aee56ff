//! The append-only event log `<dir>/events.log`: its byte format, the scanner that reads
//! it back record by record, and the writer that appends and fdatasyncs.
//!
//! Format, byte by byte:
//!
//! ```text
//! file    = header record*
//! header  = magic "LEDGLOG\n" (8 bytes) | format version u32 LE (= 1)
//! record  = payload length u32 LE | crc32 (IEEE, crc32fast) of payload u32 LE | payload
//! payload = kind u8 (1 = event) | request id length u16 LE | request id (UTF-8)
//!         | the event's signed bytes (`Event::bytes`)
//! ```
//!
//! A request id length of 0 means "no request id" (an event that arrived by replication);
//! an empty request id is therefore not representable and is refused by the writer.
//!
//! The file may end in zeros after the last record: space the writer filled with zeros
//! ahead of the records ([`LOG_PREALLOCATE_BYTES`] at a time), so that the `fdatasync` of
//! a commit only flushes data into blocks that are already allocated and initialised, and
//! never also journals a new file size (a third less time per commit on ext4). A record
//! never starts with a zero length, so a scan ends cleanly where the bytes from there to
//! the end of the file are all zero; zeros followed by anything else are a torn write.
//!
//! This module knows nothing about sled or about what a record means to the ledger; it only
//! guarantees that what [`Scanner`] accepts is byte for byte what [`LogWriter`] wrote.

use super::{BadRecord, Record, StoreError, PAYLOAD_BYTES_MAX, REQUEST_ID_BYTES_MAX};
use ledger_core::Event;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub(super) const LOG_FILE: &str = "events.log";
/// Written next to the log and renamed over it, so the log appears with a complete header.
const LOG_FILE_NEW: &str = "events.log.new";
pub(super) const LOG_MAGIC: [u8; 8] = *b"LEDGLOG\n";
pub(super) const LOG_FORMAT: u32 = 1;
pub(super) const HEADER_LEN: u64 = 12;
/// Length and CRC in front of each payload.
pub(super) const FRAME_HEADER_LEN: usize = 8;
pub(super) const RECORD_KIND_EVENT: u8 = 1;
/// Kind, request id length and at least one byte of event.
const PAYLOAD_BYTES_MIN: usize = 1 + 2 + 1;
/// Zeros the writer keeps ahead of the last record when preallocating. Filling 1 MiB costs
/// about 1 ms in the commit that does it, once per ~3,000 events; 4 MiB costs ten times more.
pub(super) const LOG_PREALLOCATE_BYTES: u64 = 1 << 20;
/// Preallocation is rounded up to whole pages.
const PAGE_BYTES: u64 = 4096;

/// Where a record sits in the log: the offset of its frame and the frame's length (header
/// included). The index stores these instead of copies of the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Loc {
    pub offset: u64,
    pub len: u32,
}

impl Loc {
    pub(super) const BYTES: usize = 12;

    pub(super) fn to_bytes(self) -> [u8; Loc::BYTES] {
        let mut b = [0u8; Loc::BYTES];
        b[..8].copy_from_slice(&self.offset.to_be_bytes());
        b[8..].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    pub(super) fn from_bytes(b: &[u8]) -> Option<Loc> {
        let b: &[u8; Loc::BYTES] = b.try_into().ok()?;
        let (offset, len) = b.split_at(8);
        Some(Loc {
            offset: u64::from_be_bytes(offset.try_into().ok()?),
            len: u32::from_be_bytes(len.try_into().ok()?),
        })
    }
}

/// Reads the record at `loc` (one `pread`), checking its framing, CRC and event as the
/// scanner does. Safe from any thread: the log is only ever appended to past `loc`.
///
/// # Errors
/// [`StoreError::Io`]; [`StoreError::LogRecordUnreadable`] when the bytes there are not the
/// record the index says they are.
pub(super) fn read_at(file: &File, path: &Path, loc: Loc) -> Result<Record, StoreError> {
    let unreadable = |reason: String| StoreError::LogRecordUnreadable {
        path: path.to_path_buf(),
        offset: loc.offset,
        reason,
    };
    let len = loc.len as usize;
    if !(FRAME_HEADER_LEN + PAYLOAD_BYTES_MIN..=FRAME_HEADER_LEN + PAYLOAD_BYTES_MAX).contains(&len)
    {
        return Err(unreadable(format!("record length {len} is impossible")));
    }
    let mut buf = vec![0u8; len];
    if let Err(e) = file.read_exact_at(&mut buf, loc.offset) {
        return Err(match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                unreadable(format!("the log ends before the {len}-byte record"))
            }
            _ => io_error("reading", path)(e),
        });
    }
    let (frame, payload) = buf.split_at(FRAME_HEADER_LEN);
    let payload_len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    if payload_len != payload.len() {
        return Err(unreadable(format!(
            "the frame says {payload_len} payload bytes, the index {}",
            payload.len()
        )));
    }
    let stored = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    checked_payload(stored, payload).map_err(|bad| unreadable(bad.to_string()))
}

/// Reads the complete records that start at `offset`, front to back, from one read of
/// about `bytes` (more when the first record is larger), checking each record's length,
/// CRC and decode as [`read_at`] does. Returns each record with the offset just after it;
/// stops at the end of `valid_end` (the part of the log readers may see).
///
/// # Errors
/// [`StoreError::Io`]; [`StoreError::LogRecordUnreadable`] when a record there is damaged.
pub(super) fn read_run(
    file: &File,
    path: &Path,
    offset: u64,
    valid_end: u64,
    bytes: usize,
) -> Result<Vec<(Record, u64)>, StoreError> {
    let mut out = Vec::new();
    if offset >= valid_end {
        return Ok(out);
    }
    let unreadable = |at: u64, reason: String| StoreError::LogRecordUnreadable {
        path: path.to_path_buf(),
        offset: at,
        reason,
    };
    let want = usize::try_from(valid_end - offset)
        .unwrap_or(usize::MAX)
        .min(bytes.max(FRAME_HEADER_LEN + PAYLOAD_BYTES_MAX));
    let mut buf = vec![0u8; want];
    file.read_exact_at(&mut buf, offset)
        .map_err(io_error("reading", path))?;
    let mut pos = 0usize;
    while pos + FRAME_HEADER_LEN <= buf.len() {
        let frame = &buf[pos..pos + FRAME_HEADER_LEN];
        let at = offset + pos as u64;
        let payload_len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        if !(PAYLOAD_BYTES_MIN..=PAYLOAD_BYTES_MAX).contains(&payload_len) {
            return Err(unreadable(
                at,
                format!("record length {payload_len} is impossible"),
            ));
        }
        let end = pos + FRAME_HEADER_LEN + payload_len;
        if end > buf.len() {
            break;
        }
        let stored = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let record = checked_payload(stored, &buf[pos + FRAME_HEADER_LEN..end])
            .map_err(|bad| unreadable(at, bad.to_string()))?;
        pos = end;
        out.push((record, offset + pos as u64));
    }
    // The read holds at least one whole record (it is at least the largest record long,
    // or reaches the visible end, which is a record boundary).
    if out.is_empty() {
        return Err(unreadable(
            offset,
            "no complete record where the index says one starts".to_owned(),
        ));
    }
    Ok(out)
}

/// Appends the framed record to `out`.
///
/// # Errors
/// [`StoreError::RequestIdInvalid`] or [`StoreError::RecordTooLarge`]; `out` is unchanged then.
pub(super) fn encode_record(record: &Record, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let request_id = record.request_id.as_deref().unwrap_or("");
    if record.request_id.is_some()
        && (request_id.is_empty() || request_id.len() > REQUEST_ID_BYTES_MAX)
    {
        return Err(StoreError::RequestIdInvalid {
            event: record.event.id(),
            n_bytes: request_id.len(),
            max: REQUEST_ID_BYTES_MAX,
        });
    }
    let event = record.event.bytes();
    let payload_len = 1 + 2 + request_id.len() + event.len();
    if payload_len > PAYLOAD_BYTES_MAX {
        return Err(StoreError::RecordTooLarge {
            event: record.event.id(),
            n_bytes: payload_len,
            max: PAYLOAD_BYTES_MAX,
        });
    }
    let start = out.len();
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(RECORD_KIND_EVENT);
    out.extend_from_slice(&(request_id.len() as u16).to_le_bytes());
    out.extend_from_slice(request_id.as_bytes());
    out.extend_from_slice(event);
    let crc = crc32fast::hash(&out[start + FRAME_HEADER_LEN..]);
    out[start + 4..start + FRAME_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(
        out.len() - start,
        FRAME_HEADER_LEN + payload_len,
        "record framing wrote {} bytes, expected {}",
        out.len() - start,
        FRAME_HEADER_LEN + payload_len
    );
    Ok(())
}

/// Checks a payload against the CRC its frame stored, then decodes it: what the scanner
/// and every indexed read accept.
fn checked_payload(stored: u32, payload: &[u8]) -> Result<Record, BadRecord> {
    let computed = crc32fast::hash(payload);
    if computed != stored {
        return Err(BadRecord::Crc { stored, computed });
    }
    decode_payload(payload)
}

/// Decodes a payload whose length and CRC already matched.
fn decode_payload(payload: &[u8]) -> Result<Record, BadRecord> {
    let kind = payload[0];
    if kind != RECORD_KIND_EVENT {
        return Err(BadRecord::UnknownKind { kind });
    }
    let request_id_len = usize::from(u16::from_le_bytes([payload[1], payload[2]]));
    let rest = &payload[3..];
    if request_id_len > REQUEST_ID_BYTES_MAX || request_id_len >= rest.len() {
        return Err(BadRecord::RequestIdLength {
            n_bytes: request_id_len,
        });
    }
    let (request_id, event) = rest.split_at(request_id_len);
    let request_id = match request_id_len {
        0 => None,
        _ => Some(String::from_utf8(request_id.to_vec()).map_err(|_| BadRecord::RequestIdNotUtf8)?),
    };
    let event = Event::from_bytes(event).map_err(|e| BadRecord::Event {
        reason: e.to_string(),
    })?;
    Ok(Record { event, request_id })
}

fn io_error<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Makes a directory entry (a created or renamed file) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("syncing directory", dir))
}

/// Checks the header of an opened log; returns the file's length.
fn check_header(file: &mut File, path: &Path) -> Result<u64, StoreError> {
    let path = path.to_path_buf();
    let len = file
        .metadata()
        .map_err(io_error("reading metadata of", &path))?
        .len();
    let mut header = [0u8; HEADER_LEN as usize];
    if len < HEADER_LEN {
        return Err(StoreError::NotALog { path, n_bytes: len });
    }
    file.read_exact(&mut header)
        .map_err(io_error("reading", &path))?;
    if header[..8] != LOG_MAGIC {
        return Err(StoreError::NotALog { path, n_bytes: len });
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != LOG_FORMAT {
        return Err(StoreError::LogFormat {
            path,
            version,
            supported: LOG_FORMAT,
        });
    }
    Ok(len)
}

/// Opens the existing log in `dir` for reading only (a backup or a check, possibly while
/// the node appends to it). Returns the file, its path and its length.
///
/// # Errors
/// As [`open_or_create`]; a missing log is [`StoreError::Io`].
pub(super) fn open_read_only(dir: &Path) -> Result<(File, PathBuf, u64), StoreError> {
    let path = dir.join(LOG_FILE);
    let mut file = File::open(&path).map_err(io_error("opening", &path))?;
    let len = check_header(&mut file, &path)?;
    Ok((file, path, len))
}

/// Opens the log in `dir`, creating it (header written, synced, renamed into place, directory
/// synced) if it does not exist. Returns the file, its path and its length.
///
/// # Errors
/// [`StoreError::Io`]; [`StoreError::NotALog`] or [`StoreError::LogFormat`] for a file that
/// is not a log this build reads.
pub(super) fn open_or_create(dir: &Path) -> Result<(File, PathBuf, u64), StoreError> {
    let path = dir.join(LOG_FILE);
    if !path.exists() {
        let new = dir.join(LOG_FILE_NEW);
        // Patients' chains of custody: the node's alone, whatever the umask.
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&new)
            .map_err(io_error("creating", &new))?;
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(&LOG_MAGIC);
        header.extend_from_slice(&LOG_FORMAT.to_le_bytes());
        file.write_all(&header).map_err(io_error("writing", &new))?;
        file.sync_all().map_err(io_error("syncing", &new))?;
        drop(file);
        std::fs::rename(&new, &path).map_err(io_error("renaming into place", &new))?;
        sync_dir(dir)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_error("opening", &path))?;
    let len = check_header(&mut file, &path)?;
    Ok((file, path, len))
}

/// One step of a scan.
#[derive(Debug)]
pub(super) enum Step {
    /// A complete, valid record ending at `end`.
    Record { record: Box<Record>, end: u64 },
    /// The log ends exactly after the previous record.
    End,
    /// The record starting at the current offset is incomplete or invalid.
    Bad(BadRecord),
}

/// Reads records front to back from a log whose header was checked.
#[derive(Debug)]
pub(super) struct Scanner {
    reader: BufReader<File>,
    path: PathBuf,
    offset: u64,
    len: u64,
    payload: Vec<u8>,
    /// Set once the rest of the file was found to be zeros (preallocated space).
    ended: bool,
}

impl Scanner {
    /// A scanner over the first `len` bytes of the log at `path`, starting after the header.
    pub(super) fn new(path: &Path, len: u64) -> Result<Scanner, StoreError> {
        let mut file = File::open(path).map_err(io_error("opening", path))?;
        file.seek(SeekFrom::Start(HEADER_LEN))
            .map_err(io_error("seeking in", path))?;
        Ok(Scanner {
            reader: BufReader::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            offset: HEADER_LEN,
            len,
            payload: Vec::new(),
            ended: false,
        })
    }

    /// Offset of the next record (the end of the last valid one).
    pub(super) fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next record. After [`Step::Bad`] or [`Step::End`] the scanner stays put.
    pub(super) fn next_record(&mut self) -> Result<Step, StoreError> {
        let available = self.len - self.offset;
        if available == 0 || self.ended {
            return Ok(Step::End);
        }
        let mut frame = [0u8; FRAME_HEADER_LEN];
        let head = FRAME_HEADER_LEN.min(usize::try_from(available).unwrap_or(FRAME_HEADER_LEN));
        self.reader
            .read_exact(&mut frame[..head])
            .map_err(io_error("reading", &self.path))?;
        if frame == [0; FRAME_HEADER_LEN] {
            // A record never has length 0: this is preallocated space if nothing but zeros
            // follows, and a torn write otherwise (which must be cut, never written over:
            // a complete old record behind the zeros could line up with new ones).
            if self.rest_is_zero(available - head as u64)? {
                self.ended = true;
                return Ok(Step::End);
            }
            return Ok(Step::Bad(BadRecord::Length { n_bytes: 0 }));
        }
        if available < FRAME_HEADER_LEN as u64 {
            return Ok(Step::Bad(BadRecord::Truncated {
                n_bytes: available,
                needed: FRAME_HEADER_LEN as u64,
            }));
        }
        let payload_len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        if !(PAYLOAD_BYTES_MIN..=PAYLOAD_BYTES_MAX).contains(&payload_len) {
            return Ok(Step::Bad(BadRecord::Length {
                n_bytes: payload_len as u64,
            }));
        }
        let needed = (FRAME_HEADER_LEN + payload_len) as u64;
        if available < needed {
            return Ok(Step::Bad(BadRecord::Truncated {
                n_bytes: available,
                needed,
            }));
        }
        self.payload.resize(payload_len, 0);
        self.reader
            .read_exact(&mut self.payload)
            .map_err(io_error("reading", &self.path))?;
        let record = match checked_payload(crc, &self.payload) {
            Ok(r) => r,
            Err(bad) => return Ok(Step::Bad(bad)),
        };
        self.offset += needed;
        Ok(Step::Record {
            record: Box::new(record),
            end: self.offset,
        })
    }
}

impl Scanner {
    /// Reads `n` more bytes and says whether they are all zero. Leaves the reader past them.
    fn rest_is_zero(&mut self, mut n: u64) -> Result<bool, StoreError> {
        let mut buf = vec![0u8; 64 * 1024];
        while n > 0 {
            let take = buf.len().min(usize::try_from(n).unwrap_or(buf.len()));
            self.reader
                .read_exact(&mut buf[..take])
                .map_err(io_error("reading", &self.path))?;
            if buf[..take].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            n -= take as u64;
        }
        Ok(true)
    }
}

/// The unit a disk writes all or nothing, at offsets that are multiples of it (the page
/// cache writes back whole pages, and a killed `write` stops at a page boundary). An
/// interrupted write therefore leaves whole sectors of what was there before, which in the
/// log's preallocated space is zeros.
const SECTOR_BYTES: u64 = 512;

/// Whether the invalid record at `offset` is what an interrupted write leaves behind: a
/// record that runs past the end of the file, a zero frame header with data after it, or a
/// record in which a sector that starts inside it is still all zeros. A record that is all
/// there but wrong (a flipped bit, an impossible non-zero length) is damage to written data:
/// it may have been acknowledged (the index lags the log), and the records after it may have
/// been too. (etcd's write-ahead log tells the two apart the same way.)
///
/// # Errors
/// [`StoreError::Io`] when the record cannot be read back.
pub(super) fn torn_write(
    path: &Path,
    offset: u64,
    reason: &BadRecord,
    file_len: u64,
) -> Result<bool, StoreError> {
    match reason {
        BadRecord::Truncated { .. } | BadRecord::Length { n_bytes: 0 } => return Ok(true),
        BadRecord::Length { .. } => return Ok(false),
        _ => {}
    }
    let file = File::open(path).map_err(io_error("opening", path))?;
    let mut frame = [0u8; FRAME_HEADER_LEN];
    file.read_exact_at(&mut frame, offset)
        .map_err(io_error("reading", path))?;
    let payload_len = u64::from(u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]));
    let record_end = offset + FRAME_HEADER_LEN as u64 + payload_len;
    let first = (offset / SECTOR_BYTES + 1) * SECTOR_BYTES;
    let read_end = (record_end.div_ceil(SECTOR_BYTES) * SECTOR_BYTES).min(file_len);
    if first >= record_end || first >= read_end {
        return Ok(false);
    }
    let mut bytes = vec![0u8; usize::try_from(read_end - first).unwrap_or(0)];
    file.read_exact_at(&mut bytes, first)
        .map_err(io_error("reading", path))?;
    Ok(bytes
        .chunks(SECTOR_BYTES as usize)
        .any(|sector| sector.iter().all(|&b| b == 0)))
}

/// The writing end of the log. Owned by the store under its mutex: one writer at a time.
#[derive(Debug)]
pub(super) struct LogWriter {
    file: File,
    path: PathBuf,
    /// End of the last durable record; once a commit returned, everything after it up to
    /// `allocated` is zeros.
    end: u64,
    /// Length of the file: `end` plus the zeros preallocated after it.
    allocated: u64,
    /// Whether to keep [`LOG_PREALLOCATE_BYTES`] of zeros ahead of the records.
    preallocate: bool,
    n_records: u64,
    /// Set when a write or sync failed: the file's state is then unknown to this process.
    failed: bool,
}

impl LogWriter {
    /// A writer appending at `end`, in a file of `file_len` bytes whose bytes after `end`
    /// are all zero.
    pub(super) fn new(
        file: File,
        path: PathBuf,
        end: u64,
        file_len: u64,
        n_records: u64,
        preallocate: bool,
    ) -> LogWriter {
        LogWriter {
            file,
            path,
            end,
            allocated: file_len.max(end),
            preallocate,
            n_records,
            failed: false,
        }
    }

    pub(super) fn end(&self) -> u64 {
        self.end
    }

    pub(super) fn n_records(&self) -> u64 {
        self.n_records
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn failed(&self) -> bool {
        self.failed
    }

    /// Marks the log unusable for this process (an index update after a durable write
    /// failed, so the two disagree until the next open replays the log).
    pub(super) fn set_failed(&mut self) {
        self.failed = true;
    }

    /// From now on every write fails (the file is reopened read-only), as on a disk that
    /// refuses writes.
    #[cfg(test)]
    pub(super) fn refuse_writes(&mut self) {
        self.file = File::open(&self.path).expect("reopening the log read-only");
    }

    /// Writes `frames` (`n_records` complete records) at the end and fdatasyncs once.
    ///
    /// On any error the writer is marked failed: after a failed fsync the page cache may
    /// hold bytes that never reach the disk (and Linux reports that error only once), so
    /// the only safe way on is a restart that re-reads the file. A best-effort truncate to
    /// the last durable end keeps later readers from seeing a partial batch; even without
    /// it, open() cuts the partial batch by its CRCs.
    pub(super) fn append(&mut self, frames: &[u8], n_records: u64) -> Result<(), StoreError> {
        assert!(
            !self.failed,
            "append on a failed log {}",
            self.path.display()
        );
        let new_end = self.end + frames.len() as u64;
        // Zeros go in first, then the records over them: one fdatasync covers both, and a
        // crash in between leaves zeros or a torn record, which the scan tells apart.
        let allocated = if self.preallocate && new_end > self.allocated {
            (new_end + LOG_PREALLOCATE_BYTES).div_ceil(PAGE_BYTES) * PAGE_BYTES
        } else {
            self.allocated.max(new_end)
        };
        let result = self
            .fill_zeros(self.allocated, allocated)
            .and_then(|()| self.file.write_all_at(frames, self.end))
            .map_err(io_error("writing", &self.path))
            .and_then(|()| {
                self.file
                    .sync_data()
                    .map_err(io_error("syncing (fdatasync)", &self.path))
            });
        if let Err(e) = result {
            self.failed = true;
            let _ = self.file.set_len(self.end);
            return Err(e);
        }
        self.end = new_end;
        self.allocated = allocated;
        self.n_records += n_records;
        Ok(())
    }

    /// Writes zeros over `[from, to)`.
    fn fill_zeros(&self, from: u64, to: u64) -> std::io::Result<()> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut at = from;
        while at < to {
            let n = ZEROS
                .len()
                .min(usize::try_from(to - at).unwrap_or(ZEROS.len()));
            self.file.write_all_at(&ZEROS[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    /// Cuts the file at `end` (a torn or invalid tail) and makes the cut durable before
    /// anything is appended after it.
    pub(super) fn cut_tail(&mut self, end: u64) -> Result<(), StoreError> {
        assert!(end >= HEADER_LEN, "cut at {end} would remove the header");
        self.file
            .set_len(end)
            .map_err(io_error("truncating", &self.path))?;
        self.file
            .sync_data()
            .map_err(io_error("syncing (fdatasync)", &self.path))?;
        self.end = end;
        self.allocated = end;
        Ok(())
    }
}
