//! The sidecar's DNS proxy (Istio's DNS capture, `ISTIO_META_DNS_CAPTURE`): the capture
//! rules send the workload's DNS queries (UDP and TCP port 53) to a `dns` listener, which
//! answers mesh names from its table with their virtual IPs and forwards every other name to
//! the upstream resolver. Messages are parsed and written with hickory-proto.
//!
//! - `table.rs`: the name table (checked at config time) and how a question finds its host;
//! - `resolv.rs`: /etc/resolv.conf's nameservers and search domains;
//! - `serve.rs`: the UDP and TCP servers, forwarding upstream.

pub mod resolv;
mod serve;
pub mod table;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};

pub use serve::serve_dns;
pub use table::Table;

/// The TTL of the proxy's own answers: Istio's (kept low so that a client honouring it soon
/// sees a service's new address).
pub const TTL: u32 = 30;

/// The largest UDP payload the proxy advertises in its own answers (the DNS flag day's
/// recommendation, which avoids fragmentation).
const EDNS_PAYLOAD: u16 = 1232;

/// What to do with a query.
#[derive(Debug)]
pub enum Decision {
    /// Send this answer (the proxy's own, or an error).
    Answer(Message),
    /// Not the proxy's name: forward the query as received and relay the reply.
    Forward(Message),
    /// Not a query the proxy answers at all (a response, or too short to have a header).
    Drop(&'static str),
}

/// Decides what a received message gets: a table answer, FORMERR for what does not parse
/// (when its header can be read), SERVFAIL without a question (as Istio), NOTIMP for an
/// operation other than QUERY, else forwarding.
pub fn decide(table: &Table, packet: &[u8]) -> Decision {
    let request = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(e) => return malformed(packet, &e.to_string()),
    };
    if request.metadata.message_type != MessageType::Query {
        return Decision::Drop("a response, not a query");
    }
    let error = |code| {
        let mut reply = reply_to(&request);
        reply.metadata.response_code = code;
        Decision::Answer(reply)
    };
    if request.metadata.op_code != OpCode::Query {
        return error(ResponseCode::NotImp);
    }
    let Some(question) = request.queries.first() else {
        return error(ResponseCode::ServFail);
    };
    let qname = question.name().to_ascii();
    let Some(found) = table.lookup(&qname) else {
        return Decision::Forward(request);
    };
    let mut reply = reply_to(&request);
    // The proxy is the authority for the mesh's names.
    reply.metadata.authoritative = true;
    let owner = question.name().clone();
    let addresses: Vec<RData> = match question.query_type() {
        RecordType::A => found.host.v4.iter().map(|ip| RData::A(A(*ip))).collect(),
        RecordType::AAAA => found
            .host
            .v6
            .iter()
            .map(|ip| RData::AAAA(AAAA(*ip)))
            .collect(),
        // NOERROR without answers: the name exists, with no record of this type (NXDOMAIN
        // would make a resolver asking A and AAAA at once give up on the name).
        _ => Vec::new(),
    };
    if addresses.is_empty() {
        return Decision::Answer(reply);
    }
    let owner = match found.cname.map(|t| Name::from_ascii(format!("{t}."))) {
        Some(Ok(target)) => {
            // A chained answer: clients that do not follow a CNAME themselves get the
            // addresses in the same reply.
            reply.add_answer(Record::from_rdata(
                owner,
                TTL,
                RData::CNAME(CNAME(target.clone())),
            ));
            target
        }
        // Table names are checked DNS names; should one not convert, answer the question.
        Some(Err(_)) | None => owner,
    };
    for data in addresses {
        reply.add_answer(Record::from_rdata(owner.clone(), TTL, data));
    }
    Decision::Answer(reply)
}

/// A reply to `request`: its id, question, RD and CD bits; an OPT record when it had one.
pub fn reply_to(request: &Message) -> Message {
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata = Metadata::response_from_request(&request.metadata);
    reply.metadata.recursion_available = true;
    if let Some(q) = request.queries.first() {
        reply.add_query(q.clone());
    }
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        reply.set_edns(edns);
    }
    reply
}

/// A message that does not parse: FORMERR when its header can be read and says it is a
/// query, else nothing (a reply to garbage could feed a loop between two servers).
fn malformed(packet: &[u8], why: &str) -> Decision {
    if packet.len() < 12 {
        return Decision::Drop("shorter than a DNS header");
    }
    if packet[2] & 0x80 != 0 {
        return Decision::Drop("a response that does not parse");
    }
    tracing::debug!("DNS: malformed query: {why}");
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let op_code = OpCode::from_u8((packet[2] >> 3) & 0x0f);
    Decision::Answer(Message::error_msg(id, op_code, ResponseCode::FormErr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use weft_xds::proto;

    fn table() -> Table {
        let config = proto::DnsListener {
            names: vec![
                proto::DnsName {
                    name: "reviews.default.svc.cluster.local".into(),
                    aliases: vec!["reviews".into()],
                    addresses: vec!["10.0.0.7".into()],
                },
                proto::DnsName {
                    name: "dual.example.com".into(),
                    aliases: vec![],
                    addresses: vec!["192.0.2.1".into(), "2001:db8::1".into()],
                },
            ],
            upstreams: vec!["127.0.0.1:1".into()],
            search: vec!["default.svc.cluster.local".into()],
            upstream_timeout: None,
        };
        Table::build(&config, "l", Default::default).expect("a good table")
    }

    fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 4242;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        m.to_vec().unwrap()
    }

    fn answer(d: Decision) -> Message {
        match d {
            Decision::Answer(m) => m,
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn a_table_name_gets_its_addresses_with_istios_ttl() {
        let m = answer(decide(&table(), &query("reviews.", RecordType::A)));
        assert_eq!(m.metadata.id, 4242);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative && m.metadata.recursion_desired);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].name, Name::from_ascii("reviews.").unwrap());
        assert_eq!(m.answers[0].ttl, TTL);
        assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::new(10, 0, 0, 7))));

        let m = answer(decide(
            &table(),
            &query("dual.example.com.", RecordType::AAAA),
        ));
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data, RData::AAAA(AAAA(v6)));
    }

    #[test]
    fn a_search_expanded_name_gets_a_cname_and_the_addresses() {
        let m = answer(decide(
            &table(),
            &query(
                "reviews.default.svc.cluster.local.default.svc.cluster.local.",
                RecordType::A,
            ),
        ));
        let target = Name::from_ascii("reviews.default.svc.cluster.local.").unwrap();
        assert_eq!(m.answers.len(), 2);
        assert_eq!(m.answers[0].data, RData::CNAME(CNAME(target.clone())));
        assert_eq!(m.answers[1].name, target);
        assert_eq!(m.answers[1].data, RData::A(A(Ipv4Addr::new(10, 0, 0, 7))));
    }

    #[test]
    fn another_type_or_a_missing_family_is_an_empty_noerror() {
        for (name, qtype) in [
            ("reviews.", RecordType::AAAA),
            ("reviews.", RecordType::MX),
            ("dual.example.com.", RecordType::TXT),
            (
                "reviews.default.svc.cluster.local.default.svc.cluster.local.",
                RecordType::AAAA,
            ),
        ] {
            let m = answer(decide(&table(), &query(name, qtype)));
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NoError,
                "{name} {qtype}"
            );
            assert!(m.answers.is_empty(), "{name} {qtype}: {:?}", m.answers);
            assert_eq!(m.queries.len(), 1);
        }
    }

    #[test]
    fn other_names_are_forwarded() {
        match decide(&table(), &query("www.example.org.", RecordType::A)) {
            Decision::Forward(m) => assert_eq!(m.metadata.id, 4242),
            other => panic!("expected forwarding, got {other:?}"),
        }
    }

    #[test]
    fn malformed_messages_get_formerr_or_are_dropped_never_a_panic() {
        let mut truncated = query("reviews.", RecordType::A);
        truncated.truncate(truncated.len() - 3);
        let m = answer(decide(&table(), &truncated));
        assert_eq!(m.metadata.id, 4242);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert!(matches!(decide(&table(), b"\x01\x02"), Decision::Drop(_)));
        let mut response = truncated.clone();
        response[2] |= 0x80;
        assert!(matches!(decide(&table(), &response), Decision::Drop(_)));
        // Whatever bytes come, a decision and no panic.
        for seed in 0..2000u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let len = rng.usize(0..80);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if seed % 2 == 0 {
                let q = query("reviews.default.svc.cluster.local.", RecordType::A);
                bytes = q.clone();
                let i = rng.usize(..q.len());
                bytes[i] = rng.u8(..);
            }
            let _ = decide(&table(), &bytes);
        }
    }

    #[test]
    fn no_question_is_servfail_and_other_operations_notimp() {
        let mut m = Message::query();
        m.metadata.id = 7;
        let none = answer(decide(&table(), &m.to_vec().unwrap()));
        assert_eq!(none.metadata.response_code, ResponseCode::ServFail);
        let mut q = Message::from_vec(&query("reviews.", RecordType::A)).unwrap();
        q.metadata.op_code = OpCode::Status;
        let status = answer(decide(&table(), &q.to_vec().unwrap()));
        assert_eq!(status.metadata.response_code, ResponseCode::NotImp);
    }
}
