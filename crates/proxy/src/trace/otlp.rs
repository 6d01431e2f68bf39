//! OTLP over gRPC: a batch is one `TraceService/Export` call, with the OpenTelemetry types
//! generated from the vendored protos (weft-xds's `opentelemetry` module).

use std::collections::BTreeMap;

use weft_xds::opentelemetry::proto::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use weft_xds::opentelemetry::proto::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value,
};
use weft_xds::opentelemetry::proto::resource::v1::Resource;
use weft_xds::opentelemetry::proto::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};

use super::export::{Finished, Kind};

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

pub(super) struct Client {
    channel: Option<tonic::transport::Channel>,
    collector: String,
}

impl Client {
    /// `collector` was checked at config time (`host:port`); the channel connects when first
    /// used, and again after a failure.
    pub(super) fn new(collector: &str) -> Client {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{collector}"))
            .ok()
            .map(|e| e.connect_lazy());
        Client {
            channel,
            collector: collector.to_owned(),
        }
    }

    pub(super) async fn send(&mut self, batch: &[Finished]) -> Result<(), String> {
        let Some(channel) = self.channel.clone() else {
            return Err(format!("{:?} is not a collector address", self.collector));
        };
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| e.to_string())?;
        let path = http::uri::PathAndQuery::from_static(EXPORT);
        let codec =
            tonic_prost::ProstCodec::<ExportTraceServiceRequest, ExportTraceServiceResponse>::default();
        let request = tonic::Request::new(encode(batch));
        grpc.unary(request, path, codec)
            .await
            .map(|_| ())
            .map_err(|s| format!("{}: {}", s.code(), s.message()))
    }
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

fn nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A batch as one request: a ResourceSpans per service (`service.name`).
pub(super) fn encode(batch: &[Finished]) -> ExportTraceServiceRequest {
    let mut by_service: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
    for s in batch {
        by_service.entry(&s.service).or_default().push(span(s));
    }
    let resource_spans = by_service
        .into_iter()
        .map(|(service, spans)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "weft-proxy".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

fn span(s: &Finished) -> Span {
    let start = nanos(s.start);
    let end = start.saturating_add(u64::try_from(s.duration.as_nanos()).unwrap_or(u64::MAX));
    let kind = match s.kind {
        Kind::Client => span::SpanKind::Client,
        Kind::Server => span::SpanKind::Server,
    };
    Span {
        trace_id: s.trace.to_be_bytes().to_vec(),
        span_id: s.id.to_be_bytes().to_vec(),
        parent_span_id: s
            .parent
            .map(|p| p.to_be_bytes().to_vec())
            .unwrap_or_default(),
        name: s.name.clone(),
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: s.tags.iter().map(|(k, v)| string(k, v)).collect(),
        status: s.error.then(|| Status {
            code: 2, // STATUS_CODE_ERROR
            ..Default::default()
        }),
        ..Default::default()
    }
}
