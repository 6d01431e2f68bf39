//! What translation could not express in weft's proxy config: a field set in a resource that
//! the proxy API does not carry yet (retry budgets, TCP keepalive, ...), or a mode weft
//! does not implement. Never dropped silently: every such field is reported, for the caller to
//! log or show in `weft proxy-status`.

use std::fmt;

use weft_api::Resource;
use weft_api::diag::{Location, ResourceRef};

/// One field translation did not apply.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Unsupported {
    /// The resource holding the field; `None` for mesh-wide settings.
    pub resource: Option<ResourceRef>,
    /// Field path in the resource (`spec.http[0].fault`).
    pub field: String,
    pub reason: String,
    /// Where the field is written, when the resource came from a file.
    pub location: Option<Location>,
}

impl Unsupported {
    pub fn new(
        resource: Option<&Resource>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        let field = field.into();
        Unsupported {
            resource: resource.map(Resource::reference),
            location: resource.and_then(|r| r.locate(&field)),
            field,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Unsupported {
    /// `VirtualService default/ratings spec.http[0].fault: <reason>`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.resource {
            Some(r) => write!(f, "{r} {}: {}", self.field, self.reason),
            None => write!(f, "{}: {}", self.field, self.reason),
        }
    }
}
