//! The job's stdout and stderr through FIFOs jobdock owns (`engine.output = "fifo"`), past
//! containerd-shim and dockerd: made in the root-only staging directory as the job user's, mode
//! 0600; opened by jobdock before the job starts, without following a symlink and checked to be
//! the FIFOs it made; read until the job is gone. jobdock keeps a write end of each open until
//! the job has exited, so a job that never opens its output, or closes it early, is no end of the
//! stream, and no open waits for the other side. When jobdock's stdout is a pipe, the job's stdout
//! is spliced into it (`Splice`); otherwise, and always for stderr, it is read in chunks. Nothing
//! here writes into the FIFOs.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use bytes::BytesMut;
use futures_util::StreamExt;
use nix::errno::Errno;
use nix::fcntl::{OFlag, SpliceFFlags};
use nix::poll::{PollFd, PollFlags, PollTimeout};
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

/// Both FIFOs, open: the read ends, and jobdock's own write ends.
pub(super) struct Opened {
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
    /// Dropped once the job has exited: then the readers see EOF when the FIFOs are empty.
    pub writers: Vec<File>,
}

impl Opened {
    /// The job's output: its stderr as chunks read, and its stdout likewise, or spliced into
    /// `pipe` (jobdock's own stdout, when that is a pipe: `splice_target`) instead. Also the
    /// write ends, to be dropped once the job has exited.
    pub(super) fn into_output(self, pipe: Option<OwnedFd>) -> (Output, Option<Splice>, Vec<File>) {
        let Opened {
            stdout,
            stderr,
            writers,
        } = self;
        let stderr = stream(stderr, Chunk::Stderr);
        // Never written through tokio: only spliced into with SPLICE_F_NONBLOCK, so jobdock's
        // stdout is left in the blocking mode it shares with other processes.
        let out = pipe
            .map(pipe::Sender::from_owned_fd_unchecked)
            .transpose()
            .unwrap_or_else(|e| {
                tracing::warn!("jobdock's stdout: {e}; the job's stdout is copied instead");
                None
            });
        match out {
            Some(out) => (stderr, Some(Splice { fifo: stdout, out }), writers),
            None => (select(stream(stdout, Chunk::Stdout), stderr), None, writers),
        }
    }
}

fn select(a: Output, b: Output) -> Output {
    Box::pin(futures_util::stream::select(a, b))
}

/// jobdock's stdout (`fd`), to splice the job's stdout into, if it is a pipe: splice(2) moves
/// the bytes between two pipes inside the kernel, past jobdock's memory and tokio's blocking
/// stdout. A file, a terminal or a socket gets the bytes copied.
pub(super) fn splice_target(fd: BorrowedFd<'_>) -> Option<OwnedFd> {
    use nix::sys::stat::SFlag;
    let mode = SFlag::from_bits_truncate(nix::sys::stat::fstat(fd).ok()?.st_mode);
    if mode & SFlag::S_IFMT != SFlag::S_IFIFO {
        return None;
    }
    fd.try_clone_to_owned()
        .inspect_err(|e| tracing::warn!("duplicating jobdock's stdout: {e}"))
        .ok()
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
    let stderr = readers.pop().expect("two");
    let stdout = readers.pop().expect("two");
    Ok(Opened {
        stdout,
        stderr,
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
fn stream(receiver: pipe::Receiver, chunk: fn(bytes::Bytes) -> Chunk) -> Output {
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

/// The job's stdout FIFO spliced into jobdock's stdout, a pipe. The pump moves the bytes as it
/// would write a chunk, so back-pressure, the order with stderr and the handling of errors are
/// the same as when they are copied.
pub(super) struct Splice {
    fifo: pipe::Receiver,
    out: pipe::Sender,
}

impl Splice {
    /// Waits until the FIFO holds bytes (`true`), or is at its end (`false`: empty, and no
    /// writer is left).
    pub(super) async fn ready(&self) -> std::io::Result<bool> {
        loop {
            self.fifo.readable().await?;
            // In try_io, readiness is cleared only if no event came since it was last seen.
            let polled = self.fifo.try_io(|| {
                let seen = polled(self.fifo.as_fd(), PollFlags::POLLIN)?;
                if seen.contains(PollFlags::POLLIN) {
                    Ok(true)
                } else if seen.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                    Ok(false)
                } else {
                    Err(std::io::ErrorKind::WouldBlock.into())
                }
            });
            match polled {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                held => return held,
            }
        }
    }

    /// Moves some of what the FIFO holds into jobdock's stdout, waiting while that is full; how
    /// many bytes (0 when the FIFO turned out empty). An error is jobdock's stdout's (`EPIPE`
    /// when its reader went away).
    pub(super) async fn move_some(&self) -> std::io::Result<usize> {
        let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
        loop {
            self.out.writable().await?;
            let moved = self.out.try_io(|| {
                loop {
                    match nix::fcntl::splice(&self.fifo, None, &self.out, None, PIPE_SIZE, flags) {
                        Ok(n) => return Ok(n),
                        Err(Errno::EINTR) => {}
                        // Either pipe may be the one not ready: only a full stdout is waited for.
                        Err(Errno::EAGAIN)
                            if polled(self.out.as_fd(), PollFlags::POLLOUT)?.is_empty() =>
                        {
                            return Err(std::io::ErrorKind::WouldBlock.into());
                        }
                        Err(Errno::EAGAIN) => return Ok(0),
                        Err(e) => return Err(e.into()),
                    }
                }
            });
            match moved {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                moved => return moved,
            }
        }
    }

    /// The FIFO's rest as chunks read, once jobdock's stdout failed: the job must not block on a
    /// full FIFO while the stdout `Sink` discards.
    pub(super) fn into_chunks(self) -> Output {
        stream(self.fifo, Chunk::Stdout)
    }
}

/// What `poll(2)` sees of `fd` now, of `events` (and `POLLHUP`, `POLLERR`).
fn polled(fd: BorrowedFd<'_>, events: PollFlags) -> std::io::Result<PollFlags> {
    let mut fds = [PollFd::new(fd, events)];
    nix::poll::poll(&mut fds, PollTimeout::ZERO)?;
    Ok(fds[0].revents().unwrap_or(PollFlags::empty()))
}

#[cfg(test)]
impl Opened {
    /// The read ends of two pipes standing in for the FIFOs, as `open` leaves them.
    pub(super) fn from_pipes(stdout: OwnedFd, stderr: OwnedFd) -> Opened {
        Opened {
            stdout: pipe::Receiver::from_owned_fd(stdout).expect("a pipe's read end"),
            stderr: pipe::Receiver::from_owned_fd(stderr).expect("a pipe's read end"),
            writers: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::splice_target;

    #[test]
    fn only_a_pipe_is_spliced_into() {
        let (_read, write) = nix::unistd::pipe().unwrap();
        let file = tempfile::tempfile().unwrap();
        let null = std::fs::File::create("/dev/null").unwrap();
        assert!(splice_target(write.as_fd()).is_some(), "a pipe");
        assert!(splice_target(file.as_fd()).is_none(), "a file");
        assert!(splice_target(null.as_fd()).is_none(), "a character device");
    }
}
