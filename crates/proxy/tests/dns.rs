//! The DNS listener end to end: the real weft-proxy with a static DNS table, a fake upstream
//! resolver on 127.0.0.1 (UDP and TCP on one port), and real queries over UDP and TCP.
//! No outside resolver is ever asked.

mod support;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use support::Proxy;

/// A resolver on 127.0.0.1 for the test: `www.example.org` has 192.0.2.80 (TTL 300);
/// `big.example.org` is truncated over UDP and has 40 addresses over TCP;
/// `silent.example.org` gets no answer; anything else NXDOMAIN. Counts the queries it gets.
struct Upstream {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start() -> Upstream {
        // UDP and TCP on one port (retried should TCP find the UDP port taken).
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind upstream udp");
            let addr = udp.local_addr().expect("addr");
            if let Ok(tcp) = TcpListener::bind(addr).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().expect("addr");
        let queries = Arc::new(AtomicUsize::new(0));
        let counted = queries.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while let Ok((len, peer)) = udp.recv_from(&mut buf).await {
                counted.fetch_add(1, Relaxed);
                if let Some(reply) = upstream_answer(&buf[..len], true) {
                    let _ = udp.send_to(&reply, peer).await;
                }
            }
        });
        let counted = queries.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    while let Ok(query) = read_framed(&mut stream).await {
                        counted.fetch_add(1, Relaxed);
                        let Some(reply) = upstream_answer(&query, false) else {
                            return;
                        };
                        if write_framed(&mut stream, &reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Upstream { addr, queries }
    }
}

fn upstream_answer(query: &[u8], udp: bool) -> Option<Vec<u8>> {
    let query = Message::from_vec(query).ok()?;
    let question = query.queries.first()?.clone();
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(question.clone());
    let name = question.name().to_ascii().to_ascii_lowercase();
    match name.as_str() {
        "www.example.org." if question.query_type() == RecordType::A => {
            reply.add_answer(Record::from_rdata(
                question.name().clone(),
                300,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 80))),
            ));
        }
        "www.example.org." => {}
        "big.example.org." if udp => reply.metadata.truncation = true,
        "big.example.org." => {
            for i in 0..40 {
                reply.add_answer(Record::from_rdata(
                    question.name().clone(),
                    60,
                    RData::A(A(Ipv4Addr::new(198, 51, 100, i))),
                ));
            }
        }
        "silent.example.org." => return None,
        _ => reply.metadata.response_code = ResponseCode::NXDomain,
    }
    reply.to_vec().ok()
}

async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut message = vec![0u8; usize::from(len)];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

async fn write_framed(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    stream
        .write_all(&(message.len() as u16).to_be_bytes())
        .await?;
    stream.write_all(message).await
}

/// The proxy's bootstrap: one DNS listener with bookinfo's reviews (and its short names) and
/// a ServiceEntry host, forwarding to `upstream`.
fn config(upstream: SocketAddr, reviews_vip: &str) -> String {
    format!(
        r#"
listeners:
- name: dns
  address: 127.0.0.1:0
  dns:
    names:
    - name: reviews.default.svc.cluster.local
      aliases: [reviews, reviews.default, reviews.default.svc]
      addresses: ["{reviews_vip}"]
    - name: api.example.com
      addresses: ["240.240.0.9", "fd00::9"]
    upstreams: ["{upstream}"]
    search: [default.svc.cluster.local, svc.cluster.local, cluster.local]
    upstreamTimeout: 0.4s
"#
    )
}

fn query(name: &str, qtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("a name"), qtype));
    m
}

/// Asks over UDP and waits for the reply (None after 3s).
async fn ask_udp(server: SocketAddr, m: &Message) -> Option<Message> {
    let bytes = m.to_vec().expect("encode");
    let reply = ask_udp_raw(server, &bytes).await?;
    Some(Message::from_vec(&reply).expect("the proxy's reply parses"))
}

async fn ask_udp_raw(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
    socket.connect(server).await.expect("connect");
    socket.send(bytes).await.expect("send");
    let mut buf = vec![0u8; 65_535];
    let len = tokio::time::timeout(Duration::from_secs(3), socket.recv(&mut buf))
        .await
        .ok()?
        .expect("recv");
    Some(buf[..len].to_vec())
}

async fn ask_tcp(server: SocketAddr, m: &Message) -> Message {
    let mut stream = TcpStream::connect(server).await.expect("connect over TCP");
    write_framed(&mut stream, &m.to_vec().expect("encode"))
        .await
        .expect("write");
    let reply = tokio::time::timeout(Duration::from_secs(3), read_framed(&mut stream))
        .await
        .expect("a TCP reply in time")
        .expect("read");
    Message::from_vec(&reply).expect("the proxy's reply parses")
}

fn v4s(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(A(ip)) => Some(*ip),
            _ => None,
        })
        .collect()
}

fn stat(proxy: &Proxy, name: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(proxy.admin).expect("admin");
    s.write_all(b"GET /stats HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
        .expect("write");
    let mut page = String::new();
    s.read_to_string(&mut page).expect("read");
    page.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /stats:\n{page}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_names_are_answered_by_the_proxy_over_udp_and_tcp() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&config(upstream.addr, "10.96.0.7"));
    let dns = proxy.addr("dns");

    // Every name a client in the namespace uses, in any case.
    for name in [
        "reviews.",
        "reviews.default.",
        "reviews.default.svc.",
        "Reviews.Default.svc.cluster.local.",
    ] {
        let m = ask_udp(dns, &query(name, RecordType::A))
            .await
            .expect("an answer");
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(m.metadata.authoritative, "{name}");
        assert_eq!(v4s(&m), [Ipv4Addr::new(10, 96, 0, 7)], "{name}");
        assert_eq!(m.answers[0].ttl, 30);
        assert_eq!(m.answers[0].name, Name::from_ascii(name).unwrap());
    }

    // What a resolver with `ndots:5` asks first: the name with the first search domain.
    let expanded = "reviews.default.svc.cluster.local.default.svc.cluster.local.";
    let m = ask_udp(dns, &query(expanded, RecordType::A))
        .await
        .expect("an answer");
    let target = Name::from_ascii("reviews.default.svc.cluster.local.").unwrap();
    assert_eq!(m.answers[0].data, RData::CNAME(CNAME(target.clone())));
    assert_eq!(m.answers[1].name, target);
    assert_eq!(v4s(&m), [Ipv4Addr::new(10, 96, 0, 7)]);
    let m = ask_udp(
        dns,
        &query(
            "api.example.com.default.svc.cluster.local.",
            RecordType::AAAA,
        ),
    )
    .await
    .expect("an answer");
    let v6: Ipv6Addr = "fd00::9".parse().unwrap();
    assert_eq!(
        m.answers.last().map(|r| &r.data),
        Some(&RData::AAAA(AAAA(v6)))
    );

    // A type the table does not hold, or a family the name lacks: empty NOERROR.
    for (name, qtype) in [
        ("reviews.", RecordType::AAAA),
        ("api.example.com.", RecordType::MX),
    ] {
        let m = ask_udp(dns, &query(name, qtype)).await.expect("an answer");
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "{name} {qtype}"
        );
        assert!(m.answers.is_empty(), "{name} {qtype}: {:?}", m.answers);
    }

    // The same over TCP.
    let m = ask_tcp(dns, &query("reviews.default.", RecordType::A)).await;
    assert_eq!(v4s(&m), [Ipv4Addr::new(10, 96, 0, 7)]);

    assert_eq!(
        upstream.queries.load(Relaxed),
        0,
        "a mesh name was forwarded"
    );
    assert_eq!(stat(&proxy, "dns.requests"), 9);
    assert_eq!(stat(&proxy, "dns.upstream_requests"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_names_are_forwarded_and_the_reply_relayed() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&config(upstream.addr, "10.96.0.7"));
    let dns = proxy.addr("dns");

    let asked = query("www.example.org.", RecordType::A);
    let m = ask_udp(dns, &asked).await.expect("an answer");
    assert_eq!(m.metadata.id, asked.metadata.id);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(v4s(&m), [Ipv4Addr::new(192, 0, 2, 80)]);
    assert_eq!(m.answers[0].ttl, 300, "the upstream's answer, as sent");
    // A search-expanded name that is no mesh name is the upstream's to answer.
    let m = ask_udp(
        dns,
        &query("www.example.org.default.svc.cluster.local.", RecordType::A),
    )
    .await
    .expect("an answer");
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    // Over TCP too.
    let m = ask_tcp(dns, &query("www.example.org.", RecordType::A)).await;
    assert_eq!(v4s(&m), [Ipv4Addr::new(192, 0, 2, 80)]);

    // Truncated over UDP: the proxy asks again over TCP and relays the whole answer when
    // it fits what the client takes (EDNS 4096)...
    let mut big = query("big.example.org.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    big.set_edns(edns);
    let m = ask_udp(dns, &big).await.expect("an answer");
    assert!(!m.metadata.truncation);
    assert_eq!(v4s(&m).len(), 40);
    // ...else the truncated one, for the client to ask over TCP itself.
    let m = ask_udp(dns, &query("big.example.org.", RecordType::A))
        .await
        .expect("an answer");
    assert!(m.metadata.truncation);
    let m = ask_tcp(dns, &query("big.example.org.", RecordType::A)).await;
    assert_eq!(v4s(&m).len(), 40);
    assert_eq!(stat(&proxy, "dns.upstream_requests"), 6);
    assert_eq!(stat(&proxy, "dns.upstream_failures"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_gets_the_client_servfail() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&config(upstream.addr, "10.96.0.7"));
    let dns = proxy.addr("dns");
    let started = Instant::now();
    let asked = query("silent.example.org.", RecordType::A);
    let m = ask_udp(dns, &asked).await.expect("an answer");
    assert_eq!(m.metadata.id, asked.metadata.id);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    let m = ask_tcp(dns, &query("silent.example.org.", RecordType::A)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(stat(&proxy, "dns.upstream_failures"), 2);
    // Mesh names are answered meanwhile.
    let m = ask_udp(dns, &query("reviews.", RecordType::A))
        .await
        .expect("an answer");
    assert_eq!(v4s(&m), [Ipv4Addr::new(10, 96, 0, 7)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_formerr_or_nothing_and_the_next_query_is_answered() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&config(upstream.addr, "10.96.0.7"));
    let dns = proxy.addr("dns");

    // A query cut short: FORMERR with its id.
    let mut cut = query("reviews.", RecordType::A).to_vec().unwrap();
    cut.truncate(cut.len() - 3);
    let reply = ask_udp_raw(dns, &cut).await.expect("FORMERR");
    let m = Message::from_vec(&reply).expect("parses");
    assert_eq!(m.metadata.id, u16::from_be_bytes([cut[0], cut[1]]));
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // Less than a header: no reply at all.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(b"\xff\x00\x01", dns).await.unwrap();
    let mut buf = [0u8; 512];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut buf))
            .await
            .is_err(),
        "a reply to 3 bytes"
    );
    // Random bytes, then a good query: the proxy still answers.
    let mut rng = fastrand::Rng::with_seed(16);
    for _ in 0..200 {
        let junk: Vec<u8> = (0..rng.usize(0..100)).map(|_| rng.u8(..)).collect();
        socket.send_to(&junk, dns).await.unwrap();
    }
    // Garbage over TCP closes that connection only.
    let mut stream = TcpStream::connect(dns).await.unwrap();
    stream.write_all(b"\x00\x05hello").await.unwrap();
    let m = ask_udp(dns, &query("reviews.", RecordType::A))
        .await
        .expect("an answer");
    assert_eq!(v4s(&m), [Ipv4Addr::new(10, 96, 0, 7)]);
    let m = ask_tcp(dns, &query("reviews.", RecordType::A)).await;
    assert_eq!(v4s(&m), [Ipv4Addr::new(10, 96, 0, 7)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_table_is_refused_and_the_last_good_one_keeps_answering() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&config(upstream.addr, "10.96.0.7"));
    let dns = proxy.addr("dns");

    proxy.rewrite_config(&config(upstream.addr, "10.96.0.0/16"));
    let line = proxy
        .wait_log("config rejected", Duration::from_secs(10))
        .expect("the CIDR table rejected");
    assert!(
        line.contains("dns.names[0].addresses[0]") && line.contains("CIDR"),
        "{line}"
    );
    let m = ask_udp(dns, &query("reviews.", RecordType::A))
        .await
        .expect("an answer");
    assert_eq!(v4s(&m), [Ipv4Addr::new(10, 96, 0, 7)]);

    // A good table replaces it on the same socket.
    proxy.rewrite_config(&config(upstream.addr, "10.96.0.8"));
    proxy
        .wait_log("config reloaded", Duration::from_secs(10))
        .expect("reloaded");
    let m = ask_udp(dns, &query("reviews.", RecordType::A))
        .await
        .expect("an answer");
    assert_eq!(v4s(&m), [Ipv4Addr::new(10, 96, 0, 8)]);
}
