//! Circuit breaking (Envoy's cluster thresholds, Istio's DestinationRule connectionPool):
//! requests are admitted, made to wait for a connection, or refused at once with 503 UO.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use weft_xds::proto;

/// A cluster's thresholds and what is using them. Shared by every request to the cluster.
#[derive(Debug)]
pub struct Breaker {
    limits: proto::CircuitBreakers,
    /// HTTP/1.1 connections busy with a request: one permit each. None: no limit.
    connections: Option<Arc<Semaphore>>,
    pending: Arc<AtomicU32>,
    requests: Arc<AtomicU32>,
    retries: Arc<AtomicU32>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// maxConnections busy and maxPendingRequests already waiting.
    Pending { connections: u32, pending: u32 },
    /// maxRequests in flight.
    Requests { requests: u32 },
}

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Overflow::Pending {
                connections,
                pending,
            } => write!(
                f,
                "{connections} connections busy and {pending} requests pending \
                 (maxConnections {connections}, http1MaxPendingRequests {pending})"
            ),
            Overflow::Requests { requests } => {
                write!(
                    f,
                    "{requests} requests in flight (http2MaxRequests {requests})"
                )
            }
        }
    }
}

/// A request's place under the thresholds; dropping it gives the place back.
#[derive(Debug)]
pub struct Admission {
    _connection: Option<OwnedSemaphorePermit>,
    requests: Arc<AtomicU32>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.requests.fetch_sub(1, Relaxed);
    }
}

/// A retry in flight; dropping it gives the place back.
#[derive(Debug)]
pub struct RetryPlace {
    retries: Arc<AtomicU32>,
}

impl Drop for RetryPlace {
    fn drop(&mut self) {
        self.retries.fetch_sub(1, Relaxed);
    }
}

/// A request's place in the pending queue while it waits for a connection.
struct Pending(Arc<AtomicU32>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Breaker {
    pub fn new(limits: Option<&proto::CircuitBreakers>) -> Self {
        let limits = limits.cloned().unwrap_or_default();
        let connections = (limits.max_connections > 0)
            .then(|| Arc::new(Semaphore::new(limits.max_connections as usize)));
        Breaker {
            limits,
            connections,
            pending: Arc::new(AtomicU32::new(0)),
            requests: Arc::new(AtomicU32::new(0)),
            retries: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Admits a request to an HTTP/1.1 (`h2` false) or HTTP/2 upstream, waiting for a
    /// connection when all are busy and the pending queue has room.
    pub async fn admit(&self, h2: bool) -> Result<Admission, Overflow> {
        let max_requests = self.limits.max_requests;
        let before = self.requests.fetch_add(1, Relaxed);
        // Constructed now so that every early return gives the place back.
        let mut admission = Admission {
            _connection: None,
            requests: self.requests.clone(),
        };
        if max_requests > 0 && before >= max_requests {
            return Err(Overflow::Requests {
                requests: max_requests,
            });
        }
        if h2 {
            return Ok(admission);
        }
        let Some(connections) = &self.connections else {
            return Ok(admission);
        };
        if let Ok(permit) = connections.clone().try_acquire_owned() {
            admission._connection = Some(permit);
            return Ok(admission);
        }
        let max_pending = self.limits.max_pending_requests;
        let waiting = self.pending.fetch_add(1, Relaxed);
        // Given back on drop: the wait below is cancelled when a route or per-try timeout
        // passes or the client goes away, and the place must not stay taken.
        let pending = Pending(self.pending.clone());
        if max_pending > 0 && waiting >= max_pending {
            return Err(Overflow::Pending {
                connections: self.limits.max_connections,
                pending: max_pending,
            });
        }
        let permit = connections.clone().acquire_owned().await;
        drop(pending);
        // The semaphore is never closed; a closed one would mean "no limit".
        admission._connection = permit.ok();
        Ok(admission)
    }

    /// A place for one more retry, or None when maxRetries are already in flight.
    pub fn retry(&self) -> Option<RetryPlace> {
        let max = self.limits.max_retries;
        let before = self.retries.fetch_add(1, Relaxed);
        let place = RetryPlace {
            retries: self.retries.clone(),
        };
        (max == 0 || before < max).then_some(place)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn breaker(yaml: &str) -> Breaker {
        let limits: proto::CircuitBreakers = yaml_serde::from_str(yaml).expect("limits");
        Breaker::new(Some(&limits))
    }

    #[tokio::test]
    async fn one_connection_one_pending_then_overflow() {
        let b = Arc::new(breaker("{maxConnections: 1, maxPendingRequests: 1}"));
        let first = b.admit(false).await.expect("a free connection");
        // The second waits for the connection...
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.admit(false).await.map(|_| ()) }
        });
        while b.pending.load(Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        // ... and the third finds the queue full.
        let third = b.admit(false).await;
        assert_eq!(
            third.unwrap_err(),
            Overflow::Pending {
                connections: 1,
                pending: 1
            }
        );
        drop(first);
        waiter
            .await
            .unwrap()
            .expect("admitted once the connection is free");
        assert_eq!(b.requests.load(Relaxed), 0, "every place given back");
    }

    #[tokio::test]
    async fn requests_and_retries_are_counted() {
        let b = breaker("{maxRequests: 2, maxRetries: 1}");
        let a = b.admit(true).await.unwrap();
        let _b = b.admit(true).await.unwrap();
        assert!(matches!(
            b.admit(true).await,
            Err(Overflow::Requests { requests: 2 })
        ));
        drop(a);
        assert!(b.admit(true).await.is_ok());
        let r = b.retry().expect("one retry");
        assert!(b.retry().is_none());
        drop(r);
        assert!(b.retry().is_some());
    }

    #[tokio::test]
    async fn no_limits_by_default() {
        let b = Breaker::new(None);
        let mut held = Vec::new();
        for _ in 0..10_000 {
            held.push(b.admit(false).await.unwrap());
        }
        assert!(b.retry().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_wait_gives_its_pending_place_back() {
        let b = Arc::new(breaker("{maxConnections: 1, maxPendingRequests: 1}"));
        let first = b.admit(false).await.expect("a free connection");
        // A request waits for the connection, and its route timeout passes.
        let waited = tokio::time::timeout(Duration::from_millis(100), b.admit(false)).await;
        assert!(waited.is_err(), "still waiting when the timeout passed");
        assert_eq!(
            b.pending.load(Relaxed),
            0,
            "the cancelled wait left the queue"
        );
        // The next request can still queue, and is admitted once the connection is free.
        let next = tokio::spawn({
            let b = b.clone();
            async move { b.admit(false).await.map(|_| ()) }
        });
        while b.pending.load(Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        drop(first);
        next.await
            .unwrap()
            .expect("queued and admitted, not refused as overflow");
    }
}
