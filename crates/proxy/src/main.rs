//! `weft-proxy`: the sidecar and gateway proxy.

use std::process::ExitCode;

fn main() -> ExitCode {
    weft_proxy::cli::run(std::env::args_os())
}
