//! The `canary-guard` binary; also `kubectl canary-guard` when linked as
//! `kubectl-canary_guard` (see [`canary_guard::cli::parse_args`]).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use canary_guard::cli::{parse_args, Command, LogFormat};

fn init_logs(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_env("CANARY_GUARD_LOG")
        .unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
    let runtime = canary_guard::runtime::tokio_runtime(cli.workers()).expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => {
                init_logs(args.log_format, "info");
                match args.resolve(|k| std::env::var(k).ok()) {
                    Ok(config) => canary_guard::runtime::run(config)
                        .await
                        .map(|()| ExitCode::SUCCESS),
                    Err(e) => Err(e),
                }
            }
            #[cfg(feature = "demo")]
            Command::Demo(args) => {
                // The timeline is the output; keep logs to errors unless asked.
                init_logs(LogFormat::Text, "error");
                // Exit 0 only when the rollback happened.
                canary_guard::runtime::demo::run(args)
                    .await
                    .map(|rolled_back| ExitCode::from(u8::from(!rolled_back)))
            }
            Command::Status(args) if args.watch => {
                init_logs(LogFormat::Text, "error");
                canary_guard::runtime::ops::watch(args, std::io::stdout())
                    .await
                    .map(|()| ExitCode::SUCCESS)
            }
            Command::Status(args) => {
                init_logs(LogFormat::Text, "error");
                canary_guard::runtime::ops::status(args).await.map(|out| {
                    print!("{out}");
                    ExitCode::SUCCESS
                })
            }
            Command::Restore(args) => {
                init_logs(LogFormat::Text, "error");
                canary_guard::runtime::ops::restore(args).await.map(|out| {
                    print!("{out}");
                    ExitCode::SUCCESS
                })
            }
            Command::Inject(args) => canary_guard::inject::run(&args).map(|()| ExitCode::SUCCESS),
            Command::Webhook(args) => {
                init_logs(LogFormat::Text, "info");
                canary_guard::webhook::run(*args)
                    .await
                    .map(|()| ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
