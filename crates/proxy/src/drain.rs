//! One drain for every connection a listener accepted, HTTP or byte tunnel.
//!
//! A listener holds a [`Drain`]; each connection (and each tunnel an HTTP request opens: a
//! WebSocket after its 101, a CONNECT) runs under a [`Watcher`] of it. Draining goes in two
//! steps, as Envoy's listener drain does:
//! 1. *draining*: HTTP connections finish their requests in flight and close (HTTP/1.1 stops
//!    keeping alive, HTTP/2 sends GOAWAY); tunnels, which have no way to say "finish up",
//!    carry on;
//! 2. *closed*, when every connection is gone or the drain timeout passes: whatever is left
//!    is closed.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    Draining,
    Closed,
}

/// The drain of one listener's connections.
pub struct Drain {
    phase: watch::Sender<Phase>,
}

/// One connection's (or tunnel's) part in a [`Drain`]: while it lives, the drain waits.
#[derive(Clone)]
pub struct Watcher {
    phase: watch::Receiver<Phase>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain::new()
    }
}

impl Drain {
    pub fn new() -> Drain {
        let (phase, _) = watch::channel(Phase::Serving);
        Drain { phase }
    }

    pub fn watcher(&self) -> Watcher {
        Watcher {
            phase: self.phase.subscribe(),
        }
    }

    /// How many connections and tunnels are open.
    pub fn open(&self) -> usize {
        self.phase.receiver_count()
    }

    /// Drains: tells every connection, waits up to `timeout` for all to end, then closes
    /// what is left. False when the timeout closed some.
    pub async fn drain(self, timeout: Duration) -> bool {
        self.phase.send_replace(Phase::Draining);
        let all_done = tokio::time::timeout(timeout, self.phase.closed())
            .await
            .is_ok();
        self.phase.send_replace(Phase::Closed);
        all_done
    }
}

impl Watcher {
    /// Serves an HTTP connection: on draining it is told to shut down gracefully; closed, it
    /// is dropped (its socket closed).
    pub async fn http<C>(mut self, conn: C) -> Result<(), C::Error>
    where
        C: GracefulConnection,
    {
        let mut conn = pin!(conn);
        let mut told = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => return result,
                phase = self.next() => match phase {
                    Phase::Draining if !told => {
                        told = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    Phase::Closed => return Ok(()),
                    _ => {}
                },
            }
        }
    }

    /// Runs a byte tunnel until it ends, or until the drain closes it.
    pub async fn tunnel<F: Future<Output = ()>>(mut self, tunnel: F) {
        let mut tunnel = pin!(tunnel);
        loop {
            tokio::select! {
                () = tunnel.as_mut() => return,
                phase = self.next() => if phase == Phase::Closed {
                    tracing::debug!("drain: closing a tunnel still open");
                    return;
                },
            }
        }
    }

    /// The next phase after the one last seen; Closed when the drain is gone.
    async fn next(&mut self) -> Phase {
        match self.phase.changed().await {
            Ok(()) => *self.phase.borrow_and_update(),
            Err(_) => {
                // The listener's drain was dropped without draining (the runtime is going
                // away): nothing will tell this connection more; let it run.
                std::future::pending::<()>().await;
                Phase::Closed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_drain_waits_for_tunnels_then_closes_them_at_the_timeout() {
        let drain = Drain::new();
        let quick = drain.watcher();
        let stuck = drain.watcher();
        let quick = tokio::spawn(quick.tunnel(tokio::time::sleep(Duration::from_secs(1))));
        let stuck = tokio::spawn(stuck.tunnel(std::future::pending()));
        assert_eq!(drain.open(), 2);
        let started = tokio::time::Instant::now();
        let all_done = drain.drain(Duration::from_secs(5)).await;
        assert!(!all_done, "the stuck tunnel outlived the drain");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        quick.await.expect("quick tunnel");
        stuck.await.expect("stuck tunnel was closed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_ends_as_soon_as_the_last_connection_does() {
        let drain = Drain::new();
        let t = tokio::spawn(
            drain
                .watcher()
                .tunnel(tokio::time::sleep(Duration::from_millis(300))),
        );
        let started = tokio::time::Instant::now();
        assert!(drain.drain(Duration::from_secs(5)).await);
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        t.await.expect("tunnel");
    }
}
