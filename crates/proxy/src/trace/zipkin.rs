//! Zipkin v2 JSON: a batch is one `POST http://COLLECTOR/api/v2/spans` of a JSON array.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value, json};

use super::export::{Finished, Kind};

pub(super) struct Client {
    uri: http::Uri,
    client: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Client {
    /// `collector` was checked at config time (`host:port`).
    pub(super) fn new(collector: &str) -> Client {
        let uri = format!("http://{collector}/api/v2/spans")
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("http://127.0.0.1:9411/api/v2/spans"));
        Client {
            uri,
            client: HyperClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub(super) async fn send(&self, batch: &[Finished]) -> Result<(), String> {
        let body = encode(batch);
        let req = http::Request::post(&self.uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        // Read the body so the connection can be reused.
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the collector answered {status}"))
        }
    }
}

/// A batch as Zipkin v2's JSON array.
pub(super) fn encode(batch: &[Finished]) -> Vec<u8> {
    let spans: Vec<Value> = batch.iter().map(span).collect();
    serde_json::to_vec(&spans).unwrap_or_default()
}

fn micros(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn span(s: &Finished) -> Value {
    let mut tags = Map::new();
    for (k, v) in &s.tags {
        tags.insert(k.to_string(), Value::String(v.clone()));
    }
    let mut endpoint = Map::new();
    endpoint.insert("serviceName".into(), Value::String(s.service.to_string()));
    let ip = match s.local_ip {
        std::net::IpAddr::V4(_) => "ipv4",
        std::net::IpAddr::V6(_) => "ipv6",
    };
    endpoint.insert(ip.into(), Value::String(s.local_ip.to_string()));
    let mut v = json!({
        "traceId": format!("{:032x}", s.trace),
        "id": format!("{:016x}", s.id),
        "kind": match s.kind { Kind::Client => "CLIENT", Kind::Server => "SERVER" },
        "name": s.name,
        "timestamp": micros(s.start),
        // Zipkin reads 0 as "unknown": a span shorter than a microsecond is 1.
        "duration": u64::try_from(s.duration.as_micros()).unwrap_or(u64::MAX).max(1),
        "localEndpoint": endpoint,
        "tags": tags,
    });
    if let (Some(p), Some(obj)) = (s.parent, v.as_object_mut()) {
        obj.insert("parentId".into(), Value::String(format!("{p:016x}")));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn spans_are_written_as_zipkin_v2_json() {
        let s = Finished {
            trace: 0x463ac35c9f6413ad48485a3953bb6124,
            id: 0xa2fb4a1d1a96d312,
            parent: Some(1),
            kind: Kind::Server,
            name: "details:9080/details/0".into(),
            start: UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_001),
            duration: Duration::from_nanos(10),
            service: Arc::from("details.default"),
            local_ip: "127.1.0.2".parse().unwrap(),
            error: false,
            tags: vec![(Arc::from("http.status_code"), "200".into())],
        };
        let v: Value = serde_json::from_slice(&encode(&[s])).unwrap();
        let s = &v[0];
        assert_eq!(s["traceId"], "463ac35c9f6413ad48485a3953bb6124");
        assert_eq!(s["id"], "a2fb4a1d1a96d312");
        assert_eq!(s["parentId"], "0000000000000001");
        assert_eq!(s["kind"], "SERVER");
        assert_eq!(s["timestamp"], 1_700_000_000_000_001u64);
        assert_eq!(s["duration"], 1);
        assert_eq!(s["localEndpoint"]["serviceName"], "details.default");
        assert_eq!(s["localEndpoint"]["ipv4"], "127.1.0.2");
        assert_eq!(s["tags"]["http.status_code"], "200");
    }
}
