//! Telemetry's metrics overrides as a listener applies them: which standard metrics it reports,
//! and which labels each goes without. Checked when config arrives; a `Customization` is a few
//! words kept in every series key, so listeners customized differently never share a series.

use weft_xds::proto;

use crate::config::ConfigError;

/// The standard metrics, by Istio's metric selector names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    RequestCount = 0,
    RequestDuration,
    RequestSize,
    ResponseSize,
    TcpOpenedConnections,
    TcpClosedConnections,
    TcpSentBytes,
    TcpReceivedBytes,
}

const METRICS: [(&str, Metric); 8] = [
    ("REQUEST_COUNT", Metric::RequestCount),
    ("REQUEST_DURATION", Metric::RequestDuration),
    ("REQUEST_SIZE", Metric::RequestSize),
    ("RESPONSE_SIZE", Metric::ResponseSize),
    ("TCP_OPENED_CONNECTIONS", Metric::TcpOpenedConnections),
    ("TCP_CLOSED_CONNECTIONS", Metric::TcpClosedConnections),
    ("TCP_SENT_BYTES", Metric::TcpSentBytes),
    ("TCP_RECEIVED_BYTES", Metric::TcpReceivedBytes),
];

/// Every label of the standard metrics, in the order they are written; a label's index is its
/// bit in [`Customization`]'s removed sets.
pub use weft_xds::STANDARD_METRIC_LABELS as LABELS;

/// What a listener's overrides leave of the standard metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Customization {
    /// Bit `m` set: metric `m` is not reported.
    disabled: u8,
    /// Per metric, bit `i` set: label `LABELS[i]` is left out.
    removed: [u32; 8],
}

impl Customization {
    /// The overrides of `stats.overrides`, applied in order; an unknown metric or label is an
    /// error naming its field.
    pub fn build(
        overrides: &[proto::MetricOverride],
        resource: &str,
    ) -> Result<Customization, ConfigError> {
        let mut c = Customization::default();
        for (i, o) in overrides.iter().enumerate() {
            let metrics: Vec<Metric> = match o.metric.as_str() {
                "" | "ALL_METRICS" => METRICS.iter().map(|(_, m)| *m).collect(),
                name => match METRICS.iter().find(|(n, _)| *n == name) {
                    Some((_, m)) => vec![*m],
                    None => {
                        return Err(ConfigError::new(
                            resource,
                            format!("stats.overrides[{i}].metric"),
                            format!(
                                "{name:?} is not a standard metric (ALL_METRICS, {})",
                                METRICS.map(|(n, _)| n).join(", ")
                            ),
                        ));
                    }
                },
            };
            let mut labels = 0u32;
            for (j, l) in o.removed_labels.iter().enumerate() {
                let Some(bit) = LABELS.iter().position(|n| n == l) else {
                    return Err(ConfigError::new(
                        resource,
                        format!("stats.overrides[{i}].removedLabels[{j}]"),
                        format!("{l:?} is not a label of the standard metrics"),
                    ));
                };
                labels |= 1 << bit;
            }
            for m in metrics {
                let bit = 1u8 << (m as u8);
                match o.disabled {
                    Some(true) => c.disabled |= bit,
                    Some(false) => c.disabled &= !bit,
                    None => {}
                }
                c.removed[m as usize] |= labels;
            }
        }
        Ok(c)
    }

    pub fn reports(&self, m: Metric) -> bool {
        self.disabled & (1 << (m as u8)) == 0
    }

    /// Whether `m` is written with label number `label`.
    pub fn keeps(&self, m: Metric, label: usize) -> bool {
        self.removed[m as usize] & (1 << label) == 0
    }

    /// Nothing of the request metrics is reported: a request need not be recorded at all.
    pub fn reports_no_request_metric(&self) -> bool {
        self.disabled & 0b1111 == 0b1111
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(metric: &str, disabled: Option<bool>, removed: &[&str]) -> proto::MetricOverride {
        proto::MetricOverride {
            metric: metric.into(),
            disabled,
            removed_labels: removed.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn overrides_apply_in_order_per_metric() {
        let c = Customization::build(
            &[
                o("ALL_METRICS", Some(true), &["source_principal"]),
                o("REQUEST_COUNT", Some(false), &["destination_principal"]),
            ],
            "listener",
        )
        .expect("valid");
        assert!(c.reports(Metric::RequestCount));
        assert!(!c.reports(Metric::RequestDuration));
        assert!(!c.keeps(Metric::RequestCount, 5));
        assert!(!c.keeps(Metric::RequestCount, 11));
        assert!(c.keeps(Metric::RequestDuration, 11));
        assert!(!c.reports_no_request_metric());
    }

    #[test]
    fn unknown_metrics_and_labels_are_named() {
        let e = Customization::build(&[o("REQUEST_COUNTS", None, &[])], "listener \"x\"")
            .expect_err("unknown metric");
        assert!(e.to_string().contains("stats.overrides[0].metric"), "{e}");
        let e = Customization::build(&[o("", None, &["source_pod"])], "listener \"x\"")
            .expect_err("unknown label");
        assert!(e.to_string().contains("removedLabels[0]"), "{e}");
    }
}
