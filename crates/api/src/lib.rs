//! weft-api: the resources a weft user writes (Istio's, Kubernetes', and weft's own `Workload`),
//! read from YAML or JSON, validated field by field, and analyzed across resources.
//!
//! ```text
//! files -> load (documents, positions) -> decode (typed, unknown fields caught)
//!       -> validate (field rules) -> analyze (cross-resource findings)
//! ```
//!
//! Every problem is a [`Diagnostic`] that names file, line, column, resource and field path.

pub mod analyze;
pub mod common;
pub mod diag;
pub mod duration;
pub mod host;
pub mod kube;
pub mod load;
pub mod networking;
pub mod resource;
pub mod security;
pub mod suggest;
pub mod telemetry;
pub mod validate;
pub mod weft;

pub use load::{Loaded, load_paths, load_str};
pub use resource::{Resource, Spec};

pub use diag::{Diagnostic, Location, ResourceRef, Severity};
pub use duration::Duration;
