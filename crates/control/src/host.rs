//! Host names and `exportTo` visibility: the model lives in [`weft_api::host`], shared with
//! `weft analyze` so that the analyzer and the translation agree on what is visible where.

pub use weft_api::host::*;
