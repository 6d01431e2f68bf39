//! `weft example APP`: runs one of weft's demo applications (bookinfo's productpage,
//! details, reviews, ratings; httpbin; tcp-echo). `weft up` starts bookinfo's Workloads this way.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// productpage, details, reviews, ratings, httpbin or tcp-echo.
    app: String,
    /// An optional port, replacing the port of WEFT_LISTEN_ADDR.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub fn run(args: Args) -> ExitCode {
    // One thread is plenty for a demo app, and a mesh runs seven of them.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weft example: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(weft_examples::run(&args.app, &args.args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft example {}: {e}", args.app);
            ExitCode::FAILURE
        }
    }
}
