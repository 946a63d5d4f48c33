//! The job's stdout and stderr through FIFOs jobdock owns (`engine.output = "fifo"`), past
//! containerd-shim and dockerd: made in the root-only staging directory as the job user's, mode
//! 0600; opened by jobdock before the job starts, without following a symlink and checked to be
//! the FIFOs it made; read until the job is gone. jobdock keeps a write end of each open until
//! the job has exited, so a job that never opens its output, or closes it early, is no end of the
//! stream, and no open waits for the other side. Nothing here writes to the job's output.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use bytes::BytesMut;
use futures_util::StreamExt;
use nix::fcntl::OFlag;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use crate::engine::daemon::{Chunk, DaemonError, ErrorKind, Output};
use crate::engine::files::FileError;
use crate::plan::Fifos;

/// Each read takes up to this much: one buffer per stream, and the copy tokio's stdout makes of
/// a chunk, stay within the peak RSS target (BENCHMARKS.md: 1 MiB reads cost 3 MiB more, 128 KiB
/// reads 1.5 MiB).
const CHUNK: usize = 64 << 10;

/// The pipe buffer asked for (the kernel's default is 64 KiB; `fs.pipe-max-size` bounds it).
const PIPE_SIZE: usize = 1 << 20;

/// Makes the two FIFOs, owned by `uid:gid`, mode 0600. The directory is root's alone and new, so
/// nothing can be in their place.
pub(super) fn make(fifos: &Fifos, uid: u32, gid: u32) -> Result<(), FileError> {
    for path in [&fifos.stdout, &fifos.stderr] {
        let fail = |e: &dyn std::fmt::Display| FileError {
            what: "output FIFO",
            path: path.clone(),
            reason: e.to_string(),
            callers_limit: false,
        };
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| fail(&e))?;
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| fail(&e))?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| fail(&e))?;
    }
    Ok(())
}

/// Both FIFOs, open: the read ends as streams, and jobdock's own write ends.
pub(super) struct Opened {
    /// The job's stdout and stderr, each chunk as it was read, until both FIFOs are at EOF.
    pub output: Output,
    /// Dropped once the job has exited: then the readers see EOF when the FIFOs are empty.
    pub writers: Vec<File>,
}

/// Opens the job's FIFOs, before it starts: each must still be the FIFO `make` made (a FIFO, of
/// the job user, not a symlink), read end and write end the same one.
pub(super) fn open(fifos: &Fifos, uid: u32) -> Result<Opened, FileError> {
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for path in [&fifos.stdout, &fifos.stderr] {
        let (reader, writer) = open_one(path, uid).map_err(|reason| FileError {
            what: "output FIFO",
            path: path.clone(),
            reason,
            callers_limit: false,
        })?;
        readers.push(reader);
        writers.push(writer);
    }
    let stderr = stream(readers.pop().expect("two"), Chunk::Stderr);
    let stdout = stream(readers.pop().expect("two"), Chunk::Stdout);
    Ok(Opened {
        output: Box::pin(futures_util::stream::select(stdout, stderr)),
        writers,
    })
}

fn open_one(path: &Path, uid: u32) -> Result<(pipe::Receiver, File), String> {
    let flags = (OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits();
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = reader.metadata().map_err(|e| e.to_string())?;
    if !meta.file_type().is_fifo() || meta.uid() != uid {
        return Err(format!(
            "is not the job user's FIFO jobdock made (uid {}, mode {:o})",
            meta.uid(),
            meta.mode()
        ));
    }
    // With a reader open, a non-blocking open for writing succeeds at once.
    let writer = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| e.to_string())?;
    let same = writer.metadata().map_err(|e| e.to_string())?;
    if (same.dev(), same.ino()) != (meta.dev(), meta.ino()) {
        return Err("changed while jobdock opened it".into());
    }
    // A larger pipe buffer: fewer wake-ups per GiB. Not granted is fine.
    let _ = nix::fcntl::fcntl(
        &reader,
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(libc_int(PIPE_SIZE)),
    );
    let fd = reader.as_raw_fd();
    let receiver = pipe::Receiver::from_file(reader)
        .map_err(|e| format!("registering fd {fd} with the runtime: {e}"))?;
    Ok((receiver, writer))
}

fn libc_int(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The chunks read from `receiver` until EOF (or the first error, which ends it). One buffer,
/// reused once the writer has let go of the last chunk.
fn stream(
    receiver: pipe::Receiver,
    chunk: fn(bytes::Bytes) -> Chunk,
) -> impl futures_util::Stream<Item = Result<Chunk, DaemonError>> + Send {
    let state = Some((receiver, BytesMut::new()));
    futures_util::stream::unfold(state, move |state| async move {
        let (mut receiver, mut buf) = state?;
        buf.reserve(CHUNK);
        match receiver.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => {
                let bytes = buf.split().freeze();
                Some((Ok(chunk(bytes)), Some((receiver, buf))))
            }
            Err(e) => Some((
                Err(DaemonError::new(
                    ErrorKind::Other,
                    format!("reading the job's output FIFO: {e}"),
                )),
                None,
            )),
        }
    })
    .boxed()
}
