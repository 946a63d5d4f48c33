//! The signals jobdock handles on the job's behalf, delivered as a channel so the run logic can be
//! driven by a test as easily as by the scheduler. Listening replaces the default actions: a TERM
//! no longer kills jobdock (it is forwarded) and a TSTP no longer stops it (it pauses the job).

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sig {
    Term,
    Int,
    Hup,
    Quit,
    Usr1,
    Usr2,
    /// Suspend: pause the container.
    Tstp,
    /// Resume: unpause the container.
    Cont,
    /// The terminal changed size.
    Winch,
}

impl Sig {
    const ALL: [Sig; 9] = [
        Sig::Term,
        Sig::Int,
        Sig::Hup,
        Sig::Quit,
        Sig::Usr1,
        Sig::Usr2,
        Sig::Tstp,
        Sig::Cont,
        Sig::Winch,
    ];

    /// The name dockerd's kill endpoint takes.
    pub fn name(self) -> &'static str {
        match self {
            Sig::Term => "SIGTERM",
            Sig::Int => "SIGINT",
            Sig::Hup => "SIGHUP",
            Sig::Quit => "SIGQUIT",
            Sig::Usr1 => "SIGUSR1",
            Sig::Usr2 => "SIGUSR2",
            Sig::Tstp => "SIGTSTP",
            Sig::Cont => "SIGCONT",
            Sig::Winch => "SIGWINCH",
        }
    }

    pub fn number(self) -> i32 {
        use nix::sys::signal::Signal as S;
        (match self {
            Sig::Term => S::SIGTERM,
            Sig::Int => S::SIGINT,
            Sig::Hup => S::SIGHUP,
            Sig::Quit => S::SIGQUIT,
            Sig::Usr1 => S::SIGUSR1,
            Sig::Usr2 => S::SIGUSR2,
            Sig::Tstp => S::SIGTSTP,
            Sig::Cont => S::SIGCONT,
            Sig::Winch => S::SIGWINCH,
        }) as i32
    }

    /// Signals that ask the job to end: after forwarding one, the grace period starts.
    pub fn stops(self) -> bool {
        matches!(self, Sig::Term | Sig::Int | Sig::Hup | Sig::Quit)
    }
}

/// Starts listening for every `Sig` (needs a tokio runtime); each arrival is sent on the channel.
pub(super) fn listen() -> std::io::Result<mpsc::Receiver<Sig>> {
    let (tx, rx) = mpsc::channel(16);
    for sig in Sig::ALL {
        let mut stream = signal(SignalKind::from_raw(sig.number()))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(sig).await.is_err() {
                    break;
                }
            }
        });
    }
    Ok(rx)
}
