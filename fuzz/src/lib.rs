//! What every fuzz target checks once it has a `Bootstrap`: converting it into a snapshot
//! either succeeds or returns errors that say where, and never panics.

use weft_proxy::config::ConfigError;
use weft_proxy::snapshot::Snapshot;
use weft_proxy::stats::Stats;
use weft_xds::proto::Bootstrap;

/// Builds a snapshot from `bootstrap` as the proxy does at startup. When that succeeds, builds
/// it again on top of the first (a reload of an unchanged file), which must succeed too. When
/// it fails, every error must name its resource and field.
pub fn build(bootstrap: Bootstrap) {
    let stats = Stats::default();
    match Snapshot::build(bootstrap.clone(), None, &stats) {
        Ok(first) => {
            if let Err(errors) = Snapshot::build(bootstrap, Some(&first), &stats) {
                panic!("a config that built once was rejected on reload: {errors:?}");
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "rejected without a reason");
            for e in &errors {
                check_error(e);
            }
        }
    }
}

/// Kinds of resource an error may name, as `Snapshot::build` and its parts spell them.
const RESOURCE_KINDS: &[&str] = &["listener \"", "listeners[", "route_config \"", "cluster \""];

/// An error names its resource (`cluster "a"`) and a field path in proto JSON names
/// (`endpoints[0].address`). The field is empty only for a missing `oneof`, where the resource
/// itself is what lacks it and the reason lists the choices.
fn check_error(e: &ConfigError) {
    assert!(
        RESOURCE_KINDS.iter().any(|k| e.resource.starts_with(k)),
        "error names no resource: {e:?}"
    );
    if e.field.is_empty() {
        assert!(
            e.reason.starts_with("one of "),
            "error names no field: {e:?}"
        );
    } else {
        assert!(
            e.field.starts_with(|c: char| c.is_ascii_lowercase()),
            "field is not a proto JSON path: {e:?}"
        );
    }
    assert!(!e.reason.is_empty(), "error gives no reason: {e:?}");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&e.resource) && shown.contains(&e.field),
        "Display drops the resource or field: {shown:?} from {e:?}"
    );
}
