//! The user's terminal for an interactive job (`bsub -Is`, `srun --pty`): raw mode while the job
//! runs, restored when the guard drops (every return path and a panic), and the window size.

use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::termios::{self, SetArg, Termios};

/// Puts a terminal in raw mode; dropping it puts the saved settings back.
pub(super) struct RawMode<'fd> {
    fd: BorrowedFd<'fd>,
    saved: Termios,
}

impl<'fd> RawMode<'fd> {
    pub(super) fn enter(fd: BorrowedFd<'fd>) -> nix::Result<Self> {
        let saved = termios::tcgetattr(fd)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw)?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        // TCSADRAIN: what the job wrote reaches the terminal before the settings change back.
        let _ = termios::tcsetattr(self.fd, SetArg::TCSADRAIN, &self.saved);
    }
}

/// The terminal's (rows, columns), if `fd` is a terminal that knows its size.
pub(super) fn size(fd: impl AsFd) -> Option<(u16, u16)> {
    let ws = rustix::termios::tcgetwinsize(fd).ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::termios::LocalFlags;

    #[test]
    fn raw_mode_is_restored_when_the_guard_drops() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let before = termios::tcgetattr(&pty.slave).unwrap();
        assert!(before.local_flags.contains(LocalFlags::ICANON));
        {
            let _raw = RawMode::enter(pty.slave.as_fd()).unwrap();
            let during = termios::tcgetattr(&pty.slave).unwrap();
            assert!(
                !during
                    .local_flags
                    .contains(LocalFlags::ICANON | LocalFlags::ECHO)
            );
        }
        let after = termios::tcgetattr(&pty.slave).unwrap();
        assert_eq!(after.local_flags, before.local_flags);
        assert_eq!(after.input_flags, before.input_flags);
    }

    #[test]
    fn size_of_a_terminal_and_of_something_else() {
        let ws = nix::pty::Winsize {
            ws_row: 33,
            ws_col: 101,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&ws), None).unwrap();
        assert_eq!(size(&pty.slave), Some((33, 101)));
        let file = tempfile::tempfile().unwrap();
        assert_eq!(size(&file), None);
    }
}
