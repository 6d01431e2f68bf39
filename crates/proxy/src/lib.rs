//! weft-proxy: the sidecar and gateway proxy of the weft mesh.
//!
//! ```text
//! proto::Bootstrap (file or xDS) --build--> Snapshot (ArcSwap, swapped whole)
//! accept -> listener -> HTTP/1.1 | HTTP/2 -> route table -> cluster -> endpoint -> upstream
//! ```
//!
//! Wire types (`weft_xds::proto`) are converted into the runtime types of this crate once, when
//! config arrives; the per-request path never touches protobuf.

pub mod access_log;
pub mod admin;
pub mod body;
pub mod breaker;
pub mod capture;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dns;
pub mod drain;
pub mod error;
pub mod http;
pub mod identity;
pub mod jwt;
pub mod listeners;
pub mod metrics;
pub mod mirror;
pub mod original_dst;
pub mod path;
pub mod ratelimit;
pub mod rbac;
pub mod reply;
pub mod route;
pub mod serve;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod stats;
pub mod tls;
pub mod trace;
pub mod transparent;
pub mod tunnel;
pub mod upstream;
pub mod xds;
