//! `weft-example APP [PORT]`: runs one of weft's demo applications standalone
//! (the same as the `weft example APP` subcommand).

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(app) = args.next() else {
        let apps: Vec<_> = weft_examples::App::ALL.iter().map(|a| a.name()).collect();
        eprintln!(
            "usage: weft-example APP [PORT]   (APP: {})",
            apps.join(", ")
        );
        return ExitCode::from(2);
    };
    let rest: Vec<String> = args.collect();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weft-example: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(weft_examples::run(&app, &rest)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-example {app}: {e}");
            ExitCode::FAILURE
        }
    }
}
