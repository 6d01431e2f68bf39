//! A `dns` listener's servers: one UDP socket and one TCP listener on the same address. A
//! query is answered from the table at once; one to forward gets its own task (bounded), so
//! a slow upstream never holds up the mesh's names. Forwarding relays the client's query
//! as received and the upstream's reply as sent, each checked to be the other's match.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};

use super::{Decision, Table, decide, reply_to};
use crate::drain::Drain;
use crate::snapshot::{ListenerKind, ListenerSpec};
use crate::state::Shared;

/// Queries being forwarded at once, per listener; past this a UDP query is dropped (the
/// client retries) and a TCP connection waits.
const MAX_IN_FLIGHT: usize = 1024;

/// A TCP client may keep its connection open this long between queries.
const TCP_IDLE: Duration = Duration::from_secs(30);

/// Serves UDP and TCP until `stop`, then drains open TCP connections and forwards in flight
/// for up to `drain_timeout`. Each query is served with the table current when it arrived.
pub async fn serve_dns(
    shared: Arc<Shared>,
    spec: watch::Receiver<Arc<ListenerSpec>>,
    mut stop: watch::Receiver<bool>,
    tcp: TcpListener,
    udp: UdpSocket,
    drain_timeout: Duration,
) {
    let drain = Drain::new();
    let name = spec.borrow().name.clone();
    let udp = Arc::new(udp);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // The largest UDP message: what a client may send with EDNS.
    let mut buf = vec![0u8; 65_535];
    loop {
        let event = tokio::select! {
            received = udp.recv_from(&mut buf) => Event::Udp(received),
            accepted = tcp.accept() => Event::Tcp(accepted),
            _ = stop.wait_for(|s| *s) => break,
        };
        match event {
            Event::Udp(Ok((len, peer))) => {
                let Some(table) = table_of(&spec) else {
                    continue;
                };
                let packet = buf[..len].to_vec();
                udp_query(&shared, &table, &udp, packet, peer, &in_flight, &drain);
            }
            // ICMP errors of earlier replies surface here on some systems.
            Event::Udp(Err(e)) => tracing::debug!(listener = %name, "DNS: UDP receive: {e}"),
            Event::Tcp(Ok((stream, peer))) => {
                let conn = tcp_conn(shared.clone(), spec.clone(), stream, in_flight.clone());
                let span = tracing::debug_span!("dns", listener = %name, %peer);
                tokio::spawn(tracing::Instrument::instrument(
                    drain.watcher().tunnel(conn),
                    span,
                ));
            }
            Event::Tcp(Err(e)) => crate::serve::accept_failed(&e, &name).await,
        }
    }
    drop(tcp);
    if !drain.drain(drain_timeout).await {
        tracing::warn!(listener = %name, "drain timeout: closed the remaining DNS connections");
    }
}

/// What woke the server.
enum Event {
    Udp(std::io::Result<(usize, SocketAddr)>),
    Tcp(std::io::Result<(TcpStream, SocketAddr)>),
}

/// The table of the listener's current spec (None only if the spec is not a DNS one, which
/// the listener set never lets happen).
fn table_of(spec: &watch::Receiver<Arc<ListenerSpec>>) -> Option<Arc<Table>> {
    match &spec.borrow().kind {
        ListenerKind::Dns { table } => Some(table.clone()),
        _ => None,
    }
}

/// One UDP query: answered now, or forwarded on its own task.
fn udp_query(
    shared: &Arc<Shared>,
    table: &Arc<Table>,
    udp: &Arc<UdpSocket>,
    packet: Vec<u8>,
    peer: SocketAddr,
    in_flight: &Arc<Semaphore>,
    drain: &Drain,
) {
    shared.stats.dns_requests.fetch_add(1, Relaxed);
    match decide(table, &packet) {
        Decision::Drop(why) => tracing::debug!(%peer, "DNS: dropped a UDP message: {why}"),
        Decision::Answer(reply) => {
            let limit = usize::from(reply_limit(&packet));
            if let Some(bytes) = encode(&reply, Some(limit)) {
                // A full socket buffer loses the reply as the network could: the client
                // asks again.
                let _ = udp.try_send_to(&bytes, peer);
            }
        }
        Decision::Forward(request) => {
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "DNS: too many queries in flight: dropped one");
                return;
            };
            let (shared, table, udp) = (shared.clone(), table.clone(), udp.clone());
            let forward = async move {
                let limit = request.max_payload();
                let reply = forward(&shared, &table, &packet, &request, Some(limit)).await;
                let _ = udp.send_to(&reply, peer).await;
                drop(permit);
            };
            tokio::spawn(drain.watcher().tunnel(forward));
        }
    }
}

/// The UDP reply size a query allows: its EDNS payload size, at least 512 bytes.
fn reply_limit(packet: &[u8]) -> u16 {
    Message::from_vec(packet).map_or(512, |m| m.max_payload())
}

/// The wire form of a reply; over UDP (`limit` set), one too large for the client is sent
/// truncated (TC set, no records) so that it asks again over TCP.
fn encode(reply: &Message, limit: Option<usize>) -> Option<Vec<u8>> {
    let bytes = match reply.to_vec() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("DNS: cannot encode a reply: {e}");
            return None;
        }
    };
    match limit {
        Some(limit) if bytes.len() > limit => reply.truncate().to_vec().ok(),
        _ => Some(bytes),
    }
}

/// A TCP connection: length-prefixed queries, answered in order, until the client closes
/// or stays idle for [`TCP_IDLE`].
async fn tcp_conn(
    shared: Arc<Shared>,
    spec: watch::Receiver<Arc<ListenerSpec>>,
    mut stream: TcpStream,
    in_flight: Arc<Semaphore>,
) {
    loop {
        let packet = match tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::debug!("DNS: TCP read: {e}");
                }
                return;
            }
            Err(_) => return,
        };
        let Some(table) = table_of(&spec) else { return };
        shared.stats.dns_requests.fetch_add(1, Relaxed);
        let reply = match decide(&table, &packet) {
            Decision::Drop(why) => {
                tracing::debug!("DNS: dropped a TCP message: {why}; closing");
                return;
            }
            Decision::Answer(reply) => match encode(&reply, None) {
                Some(bytes) => bytes,
                None => return,
            },
            Decision::Forward(request) => {
                let Ok(_permit) = in_flight.acquire().await else {
                    return;
                };
                forward(&shared, &table, &packet, &request, None).await
            }
        };
        if write_framed(&mut stream, &reply).await.is_err() {
            return;
        }
    }
}

/// Forwards `packet` (the client's query, parsed as `request`) to the upstreams in order
/// until one answers; SERVFAIL when none does in time. Over UDP (`udp_limit` set) the
/// upstream is asked over UDP, and over TCP again when its reply is truncated (the TCP
/// reply is relayed when it fits the client's UDP size, else the truncated one, so the
/// client asks over TCP itself); over TCP, over TCP.
async fn forward(
    shared: &Shared,
    table: &Table,
    packet: &[u8],
    request: &Message,
    udp_limit: Option<u16>,
) -> Vec<u8> {
    let timeout = table.upstream_timeout;
    for upstream in &table.upstreams {
        shared.stats.dns_upstream_requests.fetch_add(1, Relaxed);
        let asked = match udp_limit {
            Some(_) => {
                tokio::time::timeout(timeout, exchange_udp(*upstream, packet, request)).await
            }
            None => tokio::time::timeout(timeout, exchange_tcp(*upstream, packet, request)).await,
        };
        let reply = match asked {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                tracing::debug!(%upstream, "DNS: upstream failed: {e}");
                continue;
            }
            Err(_) => {
                tracing::debug!(%upstream, "DNS: upstream timed out after {timeout:?}");
                continue;
            }
        };
        if let Some(limit) = udp_limit
            && reply.metadata.truncation
            && let Ok(Ok(full)) =
                tokio::time::timeout(timeout, exchange_tcp(*upstream, packet, request)).await
            && full.bytes.len() <= usize::from(limit)
        {
            return full.bytes;
        }
        return reply.bytes;
    }
    shared.stats.dns_upstream_failures.fetch_add(1, Relaxed);
    let mut failure = reply_to(request);
    failure.metadata.response_code = ResponseCode::ServFail;
    encode(&failure, None).unwrap_or_default()
}

/// An upstream's reply: as received, with the parts checked.
struct Reply {
    bytes: Vec<u8>,
    metadata: hickory_proto::op::Metadata,
}

/// Whether `bytes` answer `request`: a response with its id and question. Anything else
/// arriving on the query's socket is ignored (late or spoofed).
fn matching(bytes: Vec<u8>, request: &Message) -> Option<Reply> {
    let reply = Message::from_vec(&bytes).ok()?;
    let matches = reply.metadata.message_type == MessageType::Response
        && reply.metadata.id == request.metadata.id
        && reply.queries == request.queries;
    matches.then_some(Reply {
        metadata: reply.metadata,
        bytes,
    })
}

/// Asks `upstream` over UDP from a socket of its own (a fresh port per query).
async fn exchange_udp(
    upstream: SocketAddr,
    packet: &[u8],
    request: &Message,
) -> std::io::Result<Reply> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(packet).await?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let len = socket.recv(&mut buf).await?;
        if let Some(reply) = matching(buf[..len].to_vec(), request) {
            return Ok(reply);
        }
        tracing::debug!(%upstream, "DNS: ignored a UDP message that does not answer the query");
    }
}

/// Asks `upstream` over TCP, on a connection of its own.
async fn exchange_tcp(
    upstream: SocketAddr,
    packet: &[u8],
    request: &Message,
) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(upstream).await?;
    write_framed(&mut stream, packet).await?;
    loop {
        let bytes = read_framed(&mut stream).await?;
        if let Some(reply) = matching(bytes, request) {
            return Ok(reply);
        }
    }
}

/// One DNS message over TCP: a two-byte length, then the message.
async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut message = vec![0u8; usize::from(len)];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

async fn write_framed(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| std::io::Error::other("a DNS message over 65535 bytes"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}
