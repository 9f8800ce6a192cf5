use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use canary_guard::config::{Cli, Command, LogFormat};

fn init_logs(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("CANARY_GUARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => {
                init_logs(args.log_format);
                canary_guard::runtime::run(*args).await
            }
            Command::Inject(args) => canary_guard::inject::run(&args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
