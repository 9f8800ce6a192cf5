//! The command line: clap's types for every subcommand. Every `run` flag
//! `--x-y` can also be set as `CANARY_GUARD_X_Y`.
//!
//! Design rule: flags in, values out. A value is checked when parsed
//! (`values.rs`), so a bad one exits non-zero naming the flag, the value and the
//! accepted range; checks that need several flags run in [`RunArgs::resolve`]
//! (`resolve.rs`), which turns the flags into the [`crate::config::GuardConfig`]
//! the runtime uses. Nothing past `resolve` reads a flag.

mod resolve;
mod run_args;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

pub use crate::config::Mode;

pub use run_args::{ClusterArgs, MetricsUnit, RunArgs, ScrapeArgs, DEFAULT_ENVOY_STATS_URL};

/// canary-guard: cut a failing canary off in seconds.
#[derive(Debug, Parser)]
#[command(name = "canary-guard", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Threads the runtime gets: `run --workers`; `None` (tokio's default, one
    /// per CPU) for the other commands.
    pub fn workers(&self) -> Option<usize> {
        match &self.command {
            Command::Run(args) => Some(usize::from(args.workers)),
            _ => None,
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the guard sidecar.
    Run(Box<RunArgs>),
    /// Run the whole loop on this machine: embedded API, apps, three guards, load, a fault.
    #[cfg(feature = "demo")]
    Demo(crate::runtime::demo::DemoArgs),
    /// Show a guard group: leader, members and their windows, verdict, weights.
    Status(crate::runtime::ops::StatusArgs),
    /// Put back the weights recorded before a rollback (and resume a paused rollout).
    Restore(crate::runtime::ops::RestoreArgs),
    /// Add the guard sidecar to Kubernetes manifests (file or stdin to stdout).
    Inject(crate::inject::InjectArgs),
    /// Serve a mutating admission webhook that adds the guard to labelled pods.
    Webhook(Box<crate::webhook::WebhookArgs>),
}

/// The file name kubectl looks for to run `kubectl canary-guard` (a `-` in a plugin's
/// command is a `_` in its file name).
pub const KUBECTL_PLUGIN: &str = "kubectl-canary_guard";

/// Parses the command line. Run as [`KUBECTL_PLUGIN`] (a link to this binary), the usage
/// says `kubectl canary-guard` and offers the operator's commands, `status` and `restore`.
pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let plugin = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == KUBECTL_PLUGIN);
    let mut cmd = Cli::command();
    if plugin {
        cmd = cmd
            .name("kubectl canary-guard")
            .bin_name("kubectl canary-guard")
            .about("kubectl canary-guard: see and restore a guarded canary");
        // The sidecar's own commands stay usable but out of the plugin's help.
        for sub in ["run", "demo", "inject", "webhook"] {
            // `demo` is absent from a build without the `demo` feature.
            if cmd.find_subcommand(sub).is_some() {
                cmd = cmd.mut_subcommand(sub, |s| s.hide(true));
            }
        }
    }
    // Without the feature clap would only call `demo` unrecognized; say why it is missing.
    if cfg!(not(feature = "demo")) && args.get(1).is_some_and(|a| a == "demo") {
        return Err(cmd.error(
            clap::error::ErrorKind::InvalidSubcommand,
            "`demo` is not in this build: it was built without the `demo` feature \
             (--no-default-features), which leaves the embedded Kubernetes API out; \
             build with default features to run it",
        ));
    }
    let matches = cmd.try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[cfg(test)]
mod tests;
